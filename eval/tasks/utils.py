"""Prompt, gold-answer and scoring functions for the R-Zero lm-eval tasks (DESIGN.md section 6).

lm-eval loads this file by path for the `!function utils.<name>` entries of the YAML files next
to it. Prompts, answer extraction and equivalence come from the method core `stages/rzero.py`,
so evaluation scores exactly what the Solver is trained on:
- math and the micro-world: the last `\\boxed{}` of the output against the gold with
  `equivalence.is_equivalent` (gold first; math-verify in a bounded worker process);
- multiple choice: the option letter inside the last `\\boxed{}`; no letter is wrong (the
  reference drew a random letter instead);
- BBEH: a normalized string match, see `normalize_bbeh`.
The system prompt (`rzero.SOLVER_SYSTEM`) is the tasks' `description`; lm-eval sends it as the
system turn when run with `--apply_chat_template` (see eval/README.md).
"""

import json
import re
import sys
from functools import partial
from pathlib import Path

_STAGES = str(Path(__file__).resolve().parents[2] / "stages")
if _STAGES not in sys.path:
    sys.path.insert(0, _STAGES)

import equivalence  # noqa: E402
import rzero  # noqa: E402  (the path above is what makes it importable from lm-eval)

LETTERS = "ABCDEFGHIJ"
MC_INSTRUCTION = "Put only the option letter in \\boxed{}, e.g. \\boxed{A}. There is only one correct answer."


# --- Math (and the micro-world) -----------------------------------------------------------------


def math_gold(doc: dict) -> str:
    """The gold answer as text: OlympiadBench's `final_answer[0]`, GSM8K's text after `#### `,
    otherwise `answer` (AMC23 stores floats: 27.0 becomes "27.0", as in the reference)."""
    if "final_answer" in doc:
        return str(doc["final_answer"][0])
    answer = str(doc["answer"])
    if "#### " in answer:
        return answer.split("#### ")[-1].strip()
    return answer


def process_math(doc: dict, results: list[str]) -> dict:
    return {"acc": float(equivalence.is_equivalent(math_gold(doc), rzero.last_boxed(results[0])))}


# --- Multiple choice (MMLU-Pro, SuperGPQA) ------------------------------------------------------

_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
_LETTER = re.compile(r"\(?([A-J])\)?(?=$|[\s.:,)\]])")


def mc_prompt(doc: dict) -> str:
    options = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(doc["options"]))
    return f"{doc['question']}\n\n{options}\n\n{MC_INSTRUCTION}"


def mc_gold(doc: dict) -> str:
    """SuperGPQA's `answer_letter` (its `answer` is the option text), else MMLU-Pro's `answer`."""
    return doc["answer_letter"] if "answer_letter" in doc else doc["answer"]


def option_letter(output: str | None) -> str | None:
    """The option letter in the last `\\boxed{}`: `B`, `(B)`, `B: text`, `B. text`, `\\text{B}`.
    None when there is no box or the box does not start with a letter A-J."""
    box = rzero.last_boxed(output)
    if box is None:
        return None
    box = _WRAPPER.sub(r"\1", box).strip().strip("$").strip()
    match = _LETTER.match(box)
    return match.group(1) if match else None


def process_mc(doc: dict, results: list[str]) -> dict:
    return {"acc": float(option_letter(results[0]) == mc_gold(doc))}


# --- BBEH ---------------------------------------------------------------------------------------

_SURROUNDING = " \t\n.,;:!?'\"`()[]{}*$"


def normalize_bbeh(answer: str | None) -> str:
    """Lower-case; unwrap a whole `\\text{...}`; collapse whitespace; ", " -> "," (as BBEH's own
    scorer); strip surrounding whitespace, punctuation, quotes and brackets ("(E)" -> "e",
    "[emma, lily]" -> "emma,lily"). Signs are kept: "-52" is not "52"."""
    s = (answer or "").strip()
    if s.startswith("\\text{") and s.endswith("}"):
        s = s[len("\\text{") : -1]
    s = re.sub(r"\s+", " ", s.lower()).replace(", ", ",")
    return s.strip(_SURROUNDING)


def bbeh_match(gold: str, pred: str | None) -> bool:
    """Normalized strings equal, or both numbers of equal value ("404.0" and "404")."""
    g, p = normalize_bbeh(gold), normalize_bbeh(pred)
    if not p:
        return False
    if g == p:
        return True
    try:
        return float(g) == float(p)
    except ValueError:
        return False


def process_bbeh(doc: dict, results: list[str]) -> dict:
    return {"acc": float(bbeh_match(doc["answer"], rzero.last_boxed(results[0])))}


# --- The micro-world held-out set ---------------------------------------------------------------

MICRO_OPS = (1, 2, 3, 4)


def load_micro_heldout(heldout: str | None = None, pretrained: str | None = None, split: str = "heldout", **_):
    """lm-eval `custom_dataset`: called with the task metadata, which holds `--metadata` and
    the model arguments. The file is `heldout` when given, else `<pretrained>/<split>.jsonl`
    (the built micro-world model folder). Rows: {"question", "answer", "num_ops"}."""
    import datasets

    if heldout is None and pretrained is not None and Path(pretrained).is_dir():
        heldout = str(Path(pretrained) / f"{split}.jsonl")
    if heldout is None or not Path(heldout).is_file():
        task = "rzero_micro" if split == "heldout" else "rzero_micro_val"
        raise FileNotFoundError(
            f"{task} needs the micro-world {split} file; got {heldout!r}, pretrained={pretrained!r}. Pass a "
            f"local micro-world model folder as pretrained=... (it holds {split}.jsonl; only a --world ladder "
            "base has validation.jsonl) or --metadata '{\"heldout\": \"/path/to/the.jsonl\"}'."
        )
    rows = [json.loads(line) for line in Path(heldout).read_text().splitlines() if line.strip()]
    found = {r["num_ops"] for r in rows}
    if found != set(MICRO_OPS):  # other values would drop out of the score; a missing one has no docs
        raise ValueError(f"{heldout}: num_ops values {sorted(found)}, expected exactly {MICRO_OPS}")
    test = datasets.Dataset.from_list(
        [{"question": r["question"], "answer": str(r["answer"]), "num_ops": int(r["num_ops"])} for r in rows]
    )
    return datasets.DatasetDict({"test": test})


def load_micro_validation(validation: str | None = None, pretrained: str | None = None, **_):
    """The validation split of a --world ladder base (`<pretrained>/validation.jsonl`, or the file
    `--metadata '{"validation": ...}'` names): where choices are made."""
    return load_micro_heldout(heldout=validation, pretrained=pretrained, split="validation")


def _micro_ops(dataset, num_ops: int):
    return dataset.filter(lambda row: row["num_ops"] == num_ops)


micro_ops1 = partial(_micro_ops, num_ops=1)
micro_ops2 = partial(_micro_ops, num_ops=2)
micro_ops3 = partial(_micro_ops, num_ops=3)
micro_ops4 = partial(_micro_ops, num_ops=4)
