"""Quirks of real models, each on a variant of the quick micro-world base: no pad token, no chat
template, a Llama-style template (BOS in the template, no generation prompt), and a model that never
emits EOS within max tokens. The Solver prompt must be the same text in training and labeling
(both rzero.render_prompt through generation.load_tokenizer) and in evaluation (lm-eval's own
rendering, read back from its sample log); a stage whose rewards carry no signal stops after step 1."""

import json
import shutil
from pathlib import Path

import pytest

from stage_helpers import TINY, run

LLAMA_TEMPLATE = (  # Llama-2 chat: BOS written by the template, [INST] turns, no add_generation_prompt branch
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>>\n{{ m['content'] }}\n<</SYS>>\n\n"
    "{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %} {{ m['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
)


def variant(quick_base: Path, out: Path, name: str) -> Path:
    folder = out / name
    shutil.copytree(quick_base, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    if name == "no-pad":
        config.pop("pad_token", None)
    if name in ("no-template", "llama-template"):
        (folder / "chat_template.jinja").unlink(missing_ok=True)
        config.pop("chat_template", None)
    if name == "llama-template":
        config.update(chat_template=LLAMA_TEMPLATE, bos_token="<|endoftext|>")
    config_path.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def variants(quick_base, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("variants")
    return {name: variant(quick_base, out, name) for name in ("no-pad", "no-template", "llama-template")}


@pytest.mark.parametrize("name", [
    "no-pad",
    pytest.param("no-template", marks=pytest.mark.xfail(strict=True, reason=(
        "known bug (stages/evaluate.py): it always asks lm-eval for apply_chat_template, which raises on a tokenizer "
        "without a template; training and labeling fall back to rzero's plain system:/user: transcript"))),
    "llama-template",
])
def test_evaluation_prompt_is_the_training_and_labeling_prompt(variants, name, tmp_path):
    import generation
    import rzero

    base = variants[name]
    tokenizer = generation.load_tokenizer(str(base))
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "left"  # no pad token: EOS pads
    if name == "no-template":
        assert not tokenizer.chat_template
    run("evaluate", "--base-model", base, "--iteration", "1", "--tasks", "rzero_micro_ops1", "--limit", "3",
        "--max-new-tokens", "8", "--output", tmp_path / "evaluate")
    samples = [json.loads(line) for line in (tmp_path / "evaluate" / "samples_rzero_micro_ops1.jsonl").read_text().splitlines()]
    assert len(samples) == 3
    for sample in samples:
        prompt = sample["arguments"][0][0]  # [[prompt, generation kwargs]]
        # what train_solver and label_questions render for this question
        assert prompt == rzero.render_prompt(tokenizer, rzero.solver_messages(sample["doc"]["question"])), name
    if name == "llama-template":
        assert prompt.startswith("<|endoftext|><<SYS>>") and prompt.endswith("[/INST]")
        ids = tokenizer(prompt, add_special_tokens=False).input_ids
        assert ids.count(tokenizer.bos_token_id) == 1  # the template's BOS only, none added twice


def test_sampling_without_a_pad_token_pads_with_eos_on_the_left(variants):
    import generation
    import rzero

    base = str(variants["no-pad"])
    tokenizer = generation.load_tokenizer(base)
    sample = generation.make_sampler(base, None, generation.Sampling(temperature=0, max_new_tokens=12), backend="hf")
    prompts = [rzero.render_prompt(tokenizer, rzero.solver_messages(q)) for q in ("What is 1 + 2?", "What is 7 * 8 - 3 + 1?")]
    together = sample(prompts, 1)
    alone = [sample([p], 1)[0] for p in prompts]
    assert together == alone  # left padding with EOS changes no greedy answer


def test_a_model_that_never_emits_eos_within_max_tokens_stops_the_challenger_after_step_1(quick_base, tmp_path):
    # 4 new tokens: no completion can finish, so none holds a <question> block and every reward is 0
    flags = ["--m", "3", "--steps", "3", "--prompts-per-step", "8", "--group-size", "2", "--micro-batch-size", "16",
             "--max-new-tokens", "4", "--solver-max-new-tokens", "4", "--lora-rank", "4", "--lora-alpha", "8"]
    proc = run("train_challenger", "--base-model", quick_base, "--iteration", "1", "--output", tmp_path / "c", *flags,
               check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "step 1/3" in proc.stderr and "step 2/3" not in proc.stderr  # stopped instead of spending the budget
    assert "no signal after step 1/3" in proc.stderr and "format_rate is 0" in proc.stderr
    assert "stronger base" in proc.stderr and not (tmp_path / "c").exists()


def test_a_solver_whose_groups_never_differ_stops_after_step_1(it1_labeled_with, tmp_path):
    train, base = it1_labeled_with("no-completion-writes-this")  # every reward 0: no group has variance
    flags = [f for f in TINY["solver"]]
    flags[flags.index("--prompts-per-step") + 1] = "8"
    flags[flags.index("--steps") + 1] = "3"
    flags[flags.index("--micro-batch-size") + 1] = "32"
    proc = run("train_solver", "--base-model", base, "--iteration", "1", "--train", train, "--output", tmp_path / "s",
               *flags, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "step 1/3" in proc.stderr and "step 2/3" not in proc.stderr
    assert "all 8 groups of 4 completions got equal rewards" in proc.stderr and not (tmp_path / "s").exists()


@pytest.fixture
def it1_labeled_with(quick_base, tmp_path):
    """A labeled artifact of iteration 1 on the quick base whose kept questions all carry one label."""
    import artifacts
    import pyarrow as pa
    import pyarrow.parquet as pq

    def make(label: str):
        folder = tmp_path / "labeled"
        folder.mkdir()
        questions = [f"What is {a} + {b}?" for a in range(3) for b in range(3)]
        pq.write_table(pa.table(dict(question=questions, label=[label] * len(questions),
                                     consistency=[0.5] * len(questions))), folder / "train.parquet")
        (folder / "summary.json").write_text(json.dumps(dict(iteration=1, base_identity=artifacts.base_identity(str(quick_base)))))
        (folder / "DONE").write_text("")
        return folder, quick_base

    return make
