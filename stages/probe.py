"""A gold probe for the label stage: a small labeled set, never trained or evaluated on, voted by
the same Solver with the same m and band as the generated questions, so that a run on any model
measures its pseudo-label accuracy and consistency iteration by iteration (the paper's 79% -> 63%,
which the reference's own code cannot reproduce: R-Zero issue #20).

A probe set is a local file (.jsonl, .json, .parquet), or a dataset as `<path>:<split>` or
`<path>:<config>:<split>` where path is a Hub id or a local folder in a Hub repo's layout
(openai/gsm8k:main:train, EleutherAI/hendrycks_math:algebra:train). Its question and gold answer
are read by schema (BENCHMARKS.md): GSM8K's `question` and the `#### <number>` line of `answer`;
MATH's `problem` and the last \\boxed{} of `solution`; else `question` or `problem` with `answer` or
`final_answer` (a list: its first item). A fixed-seed sample of `size` rows is drawn, the same for
every iteration, so the iterations are compared on the same questions.
"""

import re
from pathlib import Path

import artifacts
import rzero

SEED = 0  # the sample of a probe set: the same rows for every iteration and every run


def question_and_gold(row: dict) -> tuple[str, str] | None:
    """(question, gold answer) of a row in one of the known schemas; None when it has neither."""
    question = row.get("question") or row.get("problem")
    if not question:
        return None
    answer = row.get("answer")
    if isinstance(answer, str) and "####" in answer:  # GSM8K: the worked solution ends with "#### <number>"
        final = answer.rsplit("####", 1)[1].strip()
        return question, final.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", final) else final
    if answer is None and isinstance(row.get("solution"), str):  # MATH's training split: the solution's box
        answer = rzero.last_boxed(row["solution"])
    if answer is None:
        answer = row.get("final_answer")
    if isinstance(answer, list):
        answer = answer[0] if answer else None
    if answer is None or str(answer).strip() == "":
        return None
    return question, str(answer).strip()


def load(spec: str, size: int) -> list[dict]:
    """Up to `size` rows of one probe set as {set, question, gold}, a fixed-seed sample."""
    from datasets import load_dataset

    path = Path(spec)
    if path.is_file():
        kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix)
        if kind is None:
            artifacts.fail(f"--probe {spec}: a file must be .jsonl, .json or .parquet.")
        data = load_dataset(kind, data_files=str(path), split="train")
    else:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            artifacts.fail(f"--probe {spec!r}: use a file, <dataset>:<split> or <dataset>:<config>:<split> "
                           "(e.g. openai/gsm8k:main:train).")
        data = load_dataset(parts[0], parts[1] if len(parts) == 3 else None, split=parts[-1])
    rows = [pair for pair in map(question_and_gold, data.shuffle(seed=SEED).select(range(min(size, len(data)))))
            if pair]
    if not rows:
        artifacts.fail(f"--probe {spec}: no row has a question and a gold answer in a known schema (question or "
                       f"problem, with answer, final_answer or a boxed solution); columns: {data.column_names}.")
    return [dict(set=spec, question=q, gold=g) for q, g in rows]


def scores(rows: list[dict]) -> dict:
    """The probe's numbers, for each set and for all together: pseudo-label accuracy (all, and in the
    band the label stage keeps), mean consistency p, and the share in the band."""
    def of(part: list[dict]) -> dict:
        band = [r for r in part if r["in_band"]]
        return dict(questions=len(part), pseudo_label_accuracy=sum(r["label_correct"] for r in part) / len(part),
                    band_pseudo_label_accuracy=sum(r["label_correct"] for r in band) / len(band) if band else None,
                    consistency_mean=sum(r["consistency"] for r in part) / len(part), band_share=len(band) / len(part))

    sets = list(dict.fromkeys(r["set"] for r in rows))
    return dict(of(rows), sets={s: of([r for r in rows if r["set"] == s]) for s in sets})
