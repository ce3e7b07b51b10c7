"""The lm-eval tasks in eval/tasks: they build with the stock TaskManager, send the Solver prompt
through the chat template, and score to the expected values (DESIGN.md section 6).

No dataset can be downloaded here, so each Hub id is served from a local mirror with the Hub
repo's layout in tests/fixtures/benchmarks/<owner>/<name>/ (rows in the real schema; see
../shared/BENCHMARKS.md, the schema notes the kit was built from). The only thing replaced is the path handed to `datasets.load_dataset`: config
names, split names and all task code run unchanged.
"""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "eval" / "tasks"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "benchmarks"

import rzero  # noqa: E402  (conftest puts stages/ on the path)

MATH = ["rzero_amc23", "rzero_minerva", "rzero_math500", "rzero_gsm8k", "rzero_olympiadbench", "rzero_aime24", "rzero_aime25"]
GENERAL = ["rzero_mmlu_pro", "rzero_supergpqa", "rzero_bbeh"]
MICRO = [f"rzero_micro_ops{k}" for k in (1, 2, 3, 4)]
HUB = {  # task -> (dataset_path, dataset_name, split): DESIGN.md section 6
    "rzero_amc23": ("zwhe99/amc23", None, "test"),
    "rzero_minerva": ("zwhe99/simplerl-minerva-math", None, "test"),
    "rzero_math500": ("HuggingFaceH4/MATH-500", None, "test"),
    "rzero_gsm8k": ("openai/gsm8k", "main", "test"),
    "rzero_olympiadbench": ("zwhe99/simplerl-OlympiadBench", None, "test"),
    "rzero_aime24": ("HuggingFaceH4/aime_2024", None, "train"),
    "rzero_aime25": ("yentinglin/aime_2025", "default", "train"),
    "rzero_mmlu_pro": ("TIGER-Lab/MMLU-Pro", None, "test"),
    "rzero_supergpqa": ("m-a-p/SuperGPQA", None, "train"),
    "rzero_bbeh": ("MrLight/bbeh-eval", None, "train"),
}
# What a right answer looks like, per fixture row, in the form a model would write it.
ORACLE = {
    "rzero_amc23": ["\\boxed{27}", "\\boxed{4}"],  # gold 27.0 / 4.0 (floats in the dataset)
    "rzero_minerva": ["\\boxed{1.6}", "\\boxed{1}"],
    "rzero_math500": ["\\boxed{(3, \\frac{\\pi}{2})}", "\\boxed{0.5}"],  # vs \left( 3, ... \right) and \frac{1}{2}
    "rzero_gsm8k": ["\\boxed{18}", "\\boxed{3}"],  # gold after '#### '
    "rzero_olympiadbench": ["\\boxed{2}", "\\boxed{\\frac{1}{2n+2}}", "\\boxed{(1,8,19), (2,7,13), (4,5,7)}"],
    "rzero_aime24": ["\\boxed{204}", "\\boxed{33}"],  # gold '033' is zero-padded
    "rzero_aime25": ["\\boxed{70}"],
    "rzero_mmlu_pro": ["\\boxed{I}", "\\boxed{(B)}", "\\boxed{C: Na}"],
    "rzero_supergpqa": ["\\boxed{\\text{I}}", "\\boxed{B. Pancreas}"],
    "rzero_bbeh": ["\\boxed{-52}", "\\boxed{(E)}", "\\boxed{Emma, Lily}"],
}
MICRO_ROWS = [  # the micro-world's heldout.jsonl: 1, 2, 3 and 2 rows for 1..4 operations
    {"question": "What is 4 + 5?", "answer": "9", "num_ops": 1},
    {"question": "What is 4 * 7 + 5?", "answer": "33", "num_ops": 2},
    {"question": "What is 9 - 2 * 3?", "answer": "3", "num_ops": 2},
    {"question": "What is 2 + 3 * 4 - 1?", "answer": "13", "num_ops": 3},
    {"question": "What is 8 / 2 + 1 - 3?", "answer": "2", "num_ops": 3},
    {"question": "What is 5 - 7 + 1 * 2?", "answer": "0", "num_ops": 3},
    {"question": "What is 1 + 2 + 3 + 4 + 5?", "answer": "15", "num_ops": 4},
    {"question": "What is 9 / 2 + 0 * 3 - 1 + 1?", "answer": "9/2", "num_ops": 4},
]
CHATML = (  # a ChatML template with Qwen3's thinking switch, the case render_prompt must match
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


# --- Fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_mirror(tmp_path_factory):
    """`datasets.load_dataset(hub_id, name)` reads tests/fixtures/benchmarks/<hub_id> instead;
    an id, config or split the tasks should not ask for fails."""
    import datasets

    real = datasets.load_dataset
    cache = tmp_path_factory.mktemp("hf-datasets")
    asked = []

    def load_dataset(path, name=None, **kwargs):
        assert kwargs == {}, kwargs
        asked.append((path, name))
        return real(str(FIXTURES / path), name, cache_dir=str(cache))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets, "load_dataset", load_dataset)
        yield asked


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A stand-in for a built micro-world model folder: it holds heldout.jsonl."""
    path = tmp_path_factory.mktemp("micro-model")
    (path / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in MICRO_ROWS))
    return path


@pytest.fixture(scope="module")
def task_manager(hub_mirror, model_dir):
    from lm_eval.tasks import TaskManager

    # The stock CLI passes the model arguments (pretrained=...) as task metadata in the same way.
    return TaskManager(include_path=str(TASKS), metadata={"pretrained": str(model_dir)})


@pytest.fixture(scope="module")
def tasks(task_manager):
    return task_manager.load(["rzero_all", "rzero_micro"])["tasks"]


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token="<|im_end|>", chat_template=CHATML
    )


def make_lm(tokenizer, answer):
    """An lm-eval LM whose chat template is the hf backend's own code (with enable_thinking=False,
    as in `--model_args ...,enable_thinking=False`) and whose output is answer(prompt)."""
    from lm_eval.api.model import LM
    from lm_eval.models.huggingface import HFLM

    class CannedLM(LM):
        apply_chat_template = HFLM.apply_chat_template
        tokenizer_name = "test-chatml"

        def __init__(self):
            super().__init__()
            self.tokenizer = tokenizer
            self.chat_template_args = {"enable_thinking": False}
            self.prompts = []

        def generate_until(self, requests):
            self.prompts += [r.args[0] for r in requests]
            return [answer(r.args[0]) for r in requests]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    return CannedLM()


def docs(task):
    return list(task.eval_docs)


def expected_prompts(tasks, tokenizer):
    """Every (task, row index) by the prompt it must produce: the Solver messages of the task's
    question text through the chat template, exactly as the stages render them."""
    out = {}
    for name, task in tasks.items():
        for i, doc in enumerate(docs(task)):
            prompt = rzero.render_prompt(tokenizer, rzero.solver_messages(task.doc_to_text(doc)))
            out[prompt] = (name, i)
    return out


def micro_answer(name, i, tasks):
    return "\\boxed{" + docs(tasks[name])[i]["answer"] + "}"


def evaluate(task_manager, lm):
    from lm_eval import simple_evaluate

    return simple_evaluate(
        model=lm, tasks=["rzero_all", "rzero_micro"], task_manager=task_manager,
        apply_chat_template=True, bootstrap_iters=0, log_samples=False,
    )


def acc(results, name):
    return results["results"][name]["acc,none"]


# --- Building ------------------------------------------------------------------------------------


def test_every_task_builds_from_its_hub_dataset(tasks, hub_mirror):
    assert sorted(tasks) == sorted(MATH + GENERAL + MICRO)
    for name, (path, config, split) in HUB.items():
        task = tasks[name]
        assert (task.config.dataset_path, task.config.dataset_name, task.config.test_split) == (path, config, split)
        assert len(docs(task)) == len(ORACLE[name])  # every fixture row, no subsampling
    assert sorted(set(hub_mirror)) == sorted({(p, c) for p, c, _ in HUB.values()})


def test_protocol_settings(tasks):
    for name, task in tasks.items():
        cfg = task.config
        assert cfg.description == rzero.SOLVER_SYSTEM  # the system turn
        assert (cfg.output_type, cfg.num_fewshot) == ("generate_until", 0)
        assert cfg.generation_kwargs["do_sample"] is False and cfg.generation_kwargs["temperature"] == 0.0
        expected = 4096 if name in MATH else 8192 if name in GENERAL else 256
        assert cfg.generation_kwargs["max_gen_toks"] == expected, name


def test_question_texts(tasks):
    # Math: the dataset's question field as is.
    assert tasks["rzero_amc23"].doc_to_text(docs(tasks["rzero_amc23"])[0]).startswith("Cities $A$ and $B$")
    assert tasks["rzero_math500"].doc_to_text(docs(tasks["rzero_math500"])[0]).startswith("Convert the point")
    # Multiple choice: lettered options, then the instruction; only as many letters as options.
    text = tasks["rzero_mmlu_pro"].doc_to_text(docs(tasks["rzero_mmlu_pro"])[1])
    assert text == (
        "Which of the following is a prime number? (fixture row with fewer than 10 options)\n\n"
        "A. 4\nB. 7\nC. 9\nD. 15\n\n"
        "Put only the option letter in \\boxed{}, e.g. \\boxed{A}. There is only one correct answer."
    )
    assert "\nJ. Safe practices, Wants, Jealousy, Serious\n" in tasks["rzero_mmlu_pro"].doc_to_text(docs(tasks["rzero_mmlu_pro"])[0])


def test_gold_answers(tasks):
    def targets(name):
        return [tasks[name].doc_to_target(d) for d in docs(tasks[name])]

    assert targets("rzero_gsm8k") == ["18", "3"]  # text after '#### '
    assert targets("rzero_olympiadbench")[2] == "$(1,8,19), (2,7,13), (4,5,7)$"  # final_answer[0]
    assert targets("rzero_amc23") == ["27.0", "4.0"]  # str of the float, as in the reference
    assert targets("rzero_aime24") == ["204", "033"]
    assert targets("rzero_supergpqa") == ["I", "B"]  # answer_letter, not the option text


# --- Scoring, table-driven on each task's own process_results --------------------------------


SCORING = [
    # (task, row, output, expected accuracy): what each case pins down
    ("rzero_math500", 1, "so it is \\boxed{0.5}", 1.0),  # \frac{1}{2} gold vs a decimal
    ("rzero_math500", 1, "\\boxed{\\dfrac{1}{2}}", 1.0),  # \dfrac spelling
    ("rzero_math500", 1, "\\boxed{0.25}", 0.0),  # a wrong value
    ("rzero_math500", 0, "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", 1.0),  # gold written verbatim
    ("rzero_amc23", 0, "\\boxed{27}", 1.0),  # float gold 27.0
    ("rzero_amc23", 0, "First \\boxed{27}, no wait: \\boxed{45}", 0.0),  # two boxes: the last counts
    ("rzero_amc23", 0, "First \\boxed{45}, no wait: \\boxed{27}", 1.0),
    ("rzero_amc23", 0, "The answer is 27.", 0.0),  # no box, no answer
    ("rzero_gsm8k", 0, "\\boxed{\\$18}", 1.0),  # a currency sign
    ("rzero_gsm8k", 0, "\\boxed{9}", 0.0),
    ("rzero_aime24", 1, "\\boxed{033}", 1.0),  # zero-padded gold, either way
    ("rzero_aime24", 1, "\\boxed{33}", 1.0),
    ("rzero_olympiadbench", 1, "\\boxed{\\frac{1}{2(n+1)}}", 1.0),  # an equivalent expression
    ("rzero_olympiadbench", 1, "\\boxed{\\frac{1}{2n}}", 0.0),
    ("rzero_mmlu_pro", 0, "\\boxed{I}", 1.0),
    ("rzero_mmlu_pro", 0, "\\boxed{(I)}", 1.0),
    ("rzero_mmlu_pro", 0, "\\boxed{I: Unsafe practices, Distress, Fear, Serious}", 1.0),
    ("rzero_mmlu_pro", 0, "\\boxed{I. Unsafe practices}", 1.0),
    ("rzero_mmlu_pro", 0, "\\boxed{\\text{I}}", 1.0),
    ("rzero_mmlu_pro", 0, "\\boxed{\\textbf{(I)}}", 1.0),
    ("rzero_mmlu_pro", 0, "\\boxed{A} then \\boxed{I}", 1.0),  # last box wins
    ("rzero_mmlu_pro", 0, "\\boxed{I} then \\boxed{A}", 0.0),
    ("rzero_mmlu_pro", 0, "\\boxed{Unsafe practices, Distress, Fear, Serious}", 0.0),  # text, no letter
    ("rzero_mmlu_pro", 0, "The answer is (I).", 0.0),  # no box: wrong, never a guess
    ("rzero_mmlu_pro", 0, "", 0.0),
    ("rzero_mmlu_pro", 1, "\\boxed{b}", 0.0),  # lower case is not an option letter
    ("rzero_supergpqa", 0, "\\boxed{I}", 1.0),  # scored on answer_letter
    ("rzero_supergpqa", 0, "\\boxed{The difference in the common-mode rejection ratio of A1 and A2 themselves}", 0.0),
    ("rzero_supergpqa", 1, "\\boxed{(B) Pancreas}", 1.0),
    ("rzero_bbeh", 0, "\\boxed{-52}", 1.0),
    ("rzero_bbeh", 0, "\\boxed{52}", 0.0),  # the sign is not punctuation
    ("rzero_bbeh", 0, "\\boxed{-52.0}", 1.0),  # numbers of equal value
    ("rzero_bbeh", 1, "\\boxed{E}", 1.0),  # '(E)' gold: surrounding brackets stripped
    ("rzero_bbeh", 1, "\\boxed{ (e). }", 1.0),  # case, spaces, trailing period
    ("rzero_bbeh", 1, "\\boxed{D}", 0.0),
    ("rzero_bbeh", 2, "\\boxed{[Emma,  Lily]}", 1.0),  # brackets, case, comma spacing
    ("rzero_bbeh", 2, "\\boxed{\\text{emma, lily}}", 1.0),
    ("rzero_bbeh", 2, "\\boxed{lily, emma}", 0.0),
    ("rzero_bbeh", 2, "emma, lily", 0.0),  # no box
    ("rzero_micro_ops2", 0, "4 * 7 = 28, 28 + 5 = 33 \\boxed{33}", 1.0),
    ("rzero_micro_ops4", 1, "\\boxed{4.5}", 1.0),  # '9/2' gold
    ("rzero_micro_ops4", 1, "\\boxed{4}", 0.0),
]


@pytest.mark.parametrize("name,row,output,expected", SCORING)
def test_scoring(tasks, name, row, output, expected):
    task = tasks[name]
    assert task.process_results(docs(task)[row], [output]) == {"acc": expected}


# --- End to end through lm-eval's evaluator ----------------------------------------------------


def test_oracle_scores_one_and_prompts_are_the_solver_prompt(task_manager, tasks, tokenizer):
    """The LM answers by looking its prompt up among the expected ones: a prompt that is not
    exactly render_prompt(tokenizer, solver_messages(question)) fails with a KeyError."""
    table = expected_prompts(tasks, tokenizer)

    def answer(prompt):
        name, i = table[prompt]
        return "Step by step ... " + (micro_answer(name, i, tasks) if name in MICRO else ORACLE[name][i])

    lm = make_lm(tokenizer, answer)
    results = evaluate(task_manager, lm)
    assert sorted(lm.prompts) == sorted(table)  # every row asked once, nothing else
    assert next(iter(table)).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    for name in MATH + GENERAL + MICRO + ["rzero_math", "rzero_micro"]:
        assert acc(results, name) == 1.0, name


def test_no_answer_scores_zero(task_manager, tokenizer):
    results = evaluate(task_manager, make_lm(tokenizer, lambda prompt: "I am not sure."))
    for name in MATH + GENERAL + MICRO + ["rzero_math", "rzero_micro"]:
        assert acc(results, name) == 0.0, name


def test_group_scores_are_plain_means(task_manager, tasks, tokenizer):
    """Right on the first row of every task only, so task sizes differ from the scores: MATH-avg
    and Overall must be plain means of their parts; the micro score is over all questions."""
    table = expected_prompts(tasks, tokenizer)

    def answer(prompt):
        name, i = table[prompt]
        if i > 0:
            return "\\boxed{no}"
        return micro_answer(name, i, tasks) if name in MICRO else ORACLE[name][i]

    results = evaluate(task_manager, make_lm(tokenizer, answer))
    sizes = {name: len(docs(task)) for name, task in tasks.items()}
    for name, size in sizes.items():
        assert acc(results, name) == pytest.approx(1 / size), name
    math_avg = sum(1 / sizes[t] for t in MATH) / len(MATH)
    assert acc(results, "rzero_math") == pytest.approx(math_avg)
    assert math_avg != pytest.approx(len(MATH) / sum(sizes[t] for t in MATH))  # not size-weighted
    assert acc(results, "rzero_micro") == pytest.approx(len(MICRO) / len(MICRO_ROWS))
    assert "acc,none" not in results["results"]["rzero_all"]  # lm-eval would mean the 10 leaves

    spec = importlib.util.spec_from_file_location("overall", ROOT / "eval" / "overall.py")
    overall = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(overall)
    scores = overall.paper_scores(json.loads(json.dumps(results, default=str)))  # as read from disk
    parts = [math_avg, 1 / sizes["rzero_mmlu_pro"], 1 / sizes["rzero_supergpqa"], 1 / sizes["rzero_bbeh"]]
    assert scores["MATH-avg"] == pytest.approx(math_avg)
    assert scores["Overall"] == pytest.approx(sum(parts) / 4)


# --- The micro-world's held-out file -------------------------------------------------------------


def test_micro_heldout_from_metadata(hub_mirror, model_dir, tmp_path):
    from lm_eval.tasks import TaskManager

    def sizes(metadata):
        manager = TaskManager(include_path=str(TASKS), include_defaults=False, metadata=metadata)  # fast
        loaded = manager.load(["rzero_micro"])["tasks"]
        return {name: len(docs(task)) for name, task in loaded.items()}

    assert sizes({"pretrained": str(model_dir)}) == dict(zip(MICRO, (1, 2, 3, 2)))  # <model folder>/heldout.jsonl
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in MICRO_ROWS[:1] + MICRO_ROWS[1:4:2] + MICRO_ROWS[6:7] * 2))
    # An explicit heldout wins over pretrained (both arrive as metadata, as with --metadata).
    assert sizes({"pretrained": str(model_dir), "heldout": str(other)}) == dict(zip(MICRO, (1, 1, 1, 2)))
    with pytest.raises(FileNotFoundError, match="heldout"):
        sizes({"pretrained": "Qwen/Qwen3-4B-Base"})  # a Hub id holds no held-out file
    other.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2", "num_ops": 5}) + "\n")
    with pytest.raises(ValueError, match="num_ops"):
        sizes({"heldout": str(other)})
