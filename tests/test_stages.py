"""Every stage, end to end on the quick micro-world base, as a user runs it: what it writes, that a
rerun skips, that --overwrite redoes, that a killed run is not taken as done, and that bad input
gets a clear error while every input stays byte-for-byte unchanged."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stage_helpers import ROOT, TINY, checksum, env, run

STAGES = ["build_base", "train_challenger", "generate_questions", "label_questions", "train_solver", "evaluate", "report"]


@pytest.fixture(scope="module")
def it1(quick_base, tmp_path_factory) -> dict:
    """One iteration of every stage on the quick base; returns the artifact paths."""
    d = tmp_path_factory.mktemp("run") / "iter01"
    paths = {s: d / s for s in ("challenger", "questions", "labeled", "solver", "evaluate")}
    common = ["--base-model", quick_base, "--iteration", "1"]
    run("train_challenger", *common, "--output", paths["challenger"], *TINY["challenger"])
    run("generate_questions", *common, "--challenger-adapter", paths["challenger"], "--output", paths["questions"], *TINY["questions"])
    run("label_questions", *common, "--questions", paths["questions"], "--output", paths["labeled"], *TINY["labeled"])
    # The quick base cannot do arithmetic: its own votes leave every Solver group without reward variance,
    # and an adapter that never moves is an error. It copies `\boxed{answer}` from the prompt about one
    # time in five, so that label gives its groups mixed rewards.
    paths["train"] = relabeled(paths["labeled"], d / "labeled-answer", "answer")
    run("train_solver", *common, "--train", paths["train"], "--output", paths["solver"], *TINY["solver"])
    run("evaluate", *common, "--solver-adapter", paths["solver"], "--output", paths["evaluate"], *TINY["evaluate"])
    return dict(paths, base=quick_base, root=d.parent)


def relabeled(labeled: Path, out: Path, label: str) -> Path:
    """A copy of a labeled artifact whose kept questions all carry `label`."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(labeled, out)
    table = pq.read_table(out / "train.parquet")
    at = table.schema.get_field_index("label")
    pq.write_table(table.set_column(at, "label", pa.array([label] * len(table), table.schema.field("label").type)),
                   out / "train.parquet")
    return out


def test_training_stages_save_only_the_trained_adapter_and_it_moved(it1):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    for role in ("challenger", "solver"):
        weights = load_file(str(it1[role] / "adapter_model.safetensors"))
        assert not [k for k in weights if ".ref." in k] and not (it1[role] / "ref").exists(), role  # not TRL's copy
        assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k), role  # B moved from its zero init
        summary = json.loads((it1[role] / "summary.json").read_text())
        assert len(summary["history"]) == summary["steps"] == 2, role  # one logged step per --steps
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(it1["base"]), it1[role])


@pytest.mark.parametrize("script", STAGES)
def test_help_is_instant_and_lists_flags(script):
    started = time.time()
    proc = run(script, "--help")
    # heavy imports live inside main(): --help costs a Python start, not a torch import
    assert time.time() - started < 10
    assert "--output" in proc.stdout or "--run" in proc.stdout


def test_every_stage_writes_its_contract(it1):
    for name in ("challenger", "questions", "labeled", "solver", "evaluate"):
        folder = it1[name]
        assert (folder / "DONE").is_file() and (folder / "summary.json").is_file(), name
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["iteration"] == 1 and "seconds" in summary, name
        assert not list(folder.parent.glob(f".{name}.partial")), "temporary folder left behind"
    assert (it1["challenger"] / "adapter_model.safetensors").is_file()
    assert (it1["solver"] / "adapter_config.json").is_file()
    assert not (it1["solver"] / "trainer").exists()  # TRL's scratch folder is not part of the artifact


def test_questions_and_labels_hold_what_the_contract_says(it1):
    from datasets import Dataset

    import rzero

    questions = Dataset.from_parquet(str(it1["questions"] / "questions.parquet"))
    assert len(questions) == 24 and set(questions.column_names) == {"sample_id", "completion", "question"}
    # the question column is exactly what the core parses from the raw text (or null)
    assert questions["question"] == [rzero.extract_question(c) for c in questions["completion"]]
    labeled = Dataset.from_parquet(str(it1["labeled"] / "labeled.parquet")).to_list()
    assert len(labeled) == sum(q is not None for q in questions["question"])
    for row in labeled:
        assert len(row["answers"]) == 3 and sum(row["votes"]) <= 3
        assert (row["label"], row["consistency"]) == rzero.majority_vote(row["answers"])
        assert row["kept"] == (rzero.in_band(row["consistency"], 0.5) and bool(row["label"]) and not row["repeat"])
    train = Dataset.from_parquet(str(it1["labeled"] / "train.parquet")).to_list()
    assert [r["question"] for r in train] == [r["question"] for r in labeled if r["kept"]]
    kept = [r for r in labeled if r["kept"]]  # each kept row's label, p and m answers (--mitigation restrain)
    assert [(r["label"], r["consistency"], r["answers"]) for r in train] == [
        (r["label"], r["consistency"], r["answers"]) for r in kept]
    summary = json.loads((it1["labeled"] / "summary.json").read_text())
    assert summary["kept"] == len(train)
    assert sum(summary["consistency_histogram"].values()) == summary["distinct"]


def test_evaluate_writes_results_samples_and_scores(it1):
    summary = json.loads((it1["evaluate"] / "summary.json").read_text())
    assert set(summary["scores"]) >= {"rzero_micro", "rzero_micro_ops1", "rzero_micro_ops4"}
    samples = (it1["evaluate"] / "samples_rzero_micro_ops2.jsonl").read_text().splitlines()
    assert len(samples) == 20  # the quick base holds out 20 questions per number of operations
    scored = [json.loads(s)["acc"] for s in samples]
    assert summary["scores"]["rzero_micro_ops2"] == pytest.approx(sum(scored) / len(scored))
    # a group counts its subtasks' questions, so the report can give its score two standard errors
    assert summary["samples"]["rzero_micro"] == 80 and summary["samples"]["rzero_micro_ops2"] == 20


def test_rerun_skips_and_overwrite_redoes(it1):
    args = ["--base-model", it1["base"], "--iteration", "1", "--challenger-adapter", it1["challenger"],
            "--output", it1["questions"], *TINY["questions"]]
    before = (it1["questions"] / "summary.json").read_text()
    proc = run("generate_questions", *args)
    assert "is complete, skipping" in proc.stderr
    assert (it1["questions"] / "summary.json").read_text() == before
    (it1["questions"] / "left-by-the-old-run").write_text("")
    proc = run("generate_questions", *args, "--overwrite")
    # the work was redone into a fresh folder: nothing of the old output survives, nothing was skipped
    assert "skipping" not in proc.stderr and "done in" in proc.stderr
    assert not (it1["questions"] / "left-by-the-old-run").exists() and (it1["questions"] / "DONE").is_file()
    after = json.loads((it1["questions"] / "summary.json").read_text())
    assert after["num_samples"] == 24 and "--overwrite" in after["command"]


def test_a_killed_stage_is_not_taken_as_done_and_a_rerun_completes(it1, tmp_path):
    out = tmp_path / "questions"
    cmd = [sys.executable, str(ROOT / "stages" / "generate_questions.py"), "--base-model", str(it1["base"]),
           "--iteration", "1", "--output", str(out), "--num-samples", "4000", "--max-new-tokens", "40", "--batch-size", "16"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / ".questions.partial"
    deadline = time.time() + 120
    while not partial.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(2)  # well inside the generation loop
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial.exists() and not out.exists()
    proc = run("generate_questions", *cmd[2:-6], "--num-samples", "8", "--max-new-tokens", "40")
    assert (out / "DONE").is_file() and not partial.exists()
    assert "skipping" not in proc.stderr


@pytest.mark.parametrize("mitigation", ["adpo", "restrain"])
def test_the_solver_trains_under_each_label_decay_mitigation(it1, tmp_path, mitigation):
    from safetensors.torch import load_file

    # the relabeled train set's label is `answer`; its votes agree, so restrain's shares reward it as well
    train = with_column(it1["train"], tmp_path / "train", "answers", [["answer"] * 3])
    out = tmp_path / "solver"
    run("train_solver", "--base-model", it1["base"], "--iteration", "1", "--train", train, "--output", out,
        *TINY["solver"], "--mitigation", mitigation)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mitigation"] == mitigation and len(summary["history"]) == summary["steps"] == 2
    assert any(v.abs().sum() > 0 for k, v in load_file(str(out / "adapter_model.safetensors")).items() if "lora_B" in k)


@pytest.mark.parametrize("mitigation, p, flags", [("adpo", 0.0, []), ("restrain", 0.3, ["--restrain-penalty", "0"])])
def test_a_mitigation_that_trusts_no_label_leaves_nothing_to_learn(it1, tmp_path, mitigation, p, flags):
    # every label distrusted (adpo: p = 0 scales each advantage to 0; restrain: p below kappa, penalty 0), so
    # the stage's own check finds the adapter unmoved although rewards differed: the knob reaches TRL's loss
    voted = with_column(it1["train"], tmp_path / "voted", "answers", [["answer"] * 3])
    train = with_column(voted, tmp_path / "train", "consistency", [p])
    out = tmp_path / "solver"
    proc = run("train_solver", "--base-model", it1["base"], "--iteration", "1", "--train", train, "--output", out,
               *TINY["solver"], "--mitigation", mitigation, *flags, check=False)
    assert proc.returncode == 2 and "did not move" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()


def test_restrain_rewards_the_votes_not_the_label(it1, tmp_path):
    # the label is `answer`, which the quick base writes now and then (the plain reward pays for it), but no
    # vote gave it: restrain's reward is each answer's share of the votes, so no completion earns anything
    train = with_column(it1["train"], tmp_path / "train", "answers", [["zzz"] * 3])
    out = tmp_path / "solver"
    run("train_solver", "--base-model", it1["base"], "--iteration", "1", "--train", train, "--output", out,
        *TINY["solver"], "--mitigation", "restrain")
    history = json.loads((out / "summary.json").read_text())["history"]
    assert [h["reward"] for h in history] == [0.0, 0.0] and all(h["boxed_rate"] > 0 for h in history)


def with_column(labeled: Path, out: Path, name: str, value: list) -> Path:
    """A copy of a labeled artifact whose train.parquet rows all carry `value` in column `name` (or lack it: [])."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(labeled, out)
    table = pq.read_table(out / "train.parquet").drop_columns([name])
    if value:
        table = table.append_column(name, pa.array(value * len(table)))
    pq.write_table(table, out / "train.parquet")
    return out


@pytest.fixture
def frozen(it1):
    """Checksums of every artifact of the iteration, compared after each bad-input test."""
    sums = {k: checksum(it1[k]) for k in ("challenger", "questions", "labeled", "solver")}
    yield sums
    assert sums == {k: checksum(it1[k]) for k in sums}, "a stage modified one of its inputs"


def fails_with(script, *args, message: str):
    proc = run(script, *args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_missing_input_folder(it1, frozen, tmp_path):
    fails_with("label_questions", "--base-model", it1["base"], "--iteration", "1", "--questions", tmp_path / "nope",
               "--output", tmp_path / "out", message="not found")
    assert not (tmp_path / "out").exists()


def test_dataset_without_the_expected_columns(it1, frozen, tmp_path):
    from datasets import Dataset

    bad = tmp_path / "questions"
    bad.mkdir()
    Dataset.from_dict({"text": ["What is 1 + 1?"]}).to_parquet(str(bad / "questions.parquet"))
    (bad / "summary.json").write_text(json.dumps({"iteration": 1}))
    (bad / "DONE").write_text("")
    before = checksum(bad)
    fails_with("label_questions", "--base-model", it1["base"], "--iteration", "1", "--questions", bad,
               "--output", tmp_path / "out", message="expected ['completion', 'question', 'sample_id']")
    assert checksum(bad) == before


def test_questions_without_a_parsed_question(it1, frozen, tmp_path):
    from datasets import Dataset

    empty = tmp_path / "questions"
    empty.mkdir()
    Dataset.from_dict({"sample_id": [0, 1], "completion": ["no block", "<question></question>"],
                       "question": [None, None]}).to_parquet(str(empty / "questions.parquet"))
    (empty / "summary.json").write_text(json.dumps({"iteration": 1}))
    (empty / "DONE").write_text("")
    fails_with("label_questions", "--base-model", it1["base"], "--iteration", "1", "--questions", empty,
               "--output", tmp_path / "out", message="no parsed question in 2 samples")
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_incomplete_input_is_refused(it1, frozen, tmp_path):
    half = tmp_path / "questions"
    half.mkdir()
    (half / "questions.parquet").write_bytes((it1["questions"] / "questions.parquet").read_bytes())
    fails_with("label_questions", "--base-model", it1["base"], "--iteration", "1", "--questions", half,
               "--output", tmp_path / "out", message="incomplete")


def test_adapter_trained_on_another_base(it1, frozen, tmp_path):
    other = Path(run("build_base", "--quick", "--seed", "1", "--cache-dir", tmp_path).stdout.strip().splitlines()[-1])
    fails_with("train_solver", "--base-model", other, "--iteration", "2", "--train", it1["labeled"],
               "--solver-adapter", it1["solver"], "--output", tmp_path / "out", message="was made from base")


def test_zero_kept_questions(it1, frozen, tmp_path):
    from label_questions import write_train

    empty = tmp_path / "labeled"
    empty.mkdir()
    write_train([], empty / "train.parquet")
    (empty / "summary.json").write_text(json.dumps({"iteration": 1}))
    (empty / "DONE").write_text("")
    fails_with("train_solver", "--base-model", it1["base"], "--iteration", "1", "--train", empty,
               "--output", tmp_path / "out", message="kept zero questions")
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_restrain_on_a_train_set_without_its_votes(it1, frozen, tmp_path):
    old = with_column(it1["train"], tmp_path / "old", "answers", [])  # written before the answers were kept
    fails_with("train_solver", "--base-model", it1["base"], "--iteration", "1", "--train", old, "--output",
               tmp_path / "out", *TINY["solver"], "--mitigation", "restrain", message="rerun the label stage")
    fails_with("train_solver", "--base-model", it1["base"], "--iteration", "1", "--train", it1["train"], "--output",
               tmp_path / "out", "--mitigation", "ttrl", message="--mitigation 'ttrl': use one of none, adpo, restrain")
    assert not (tmp_path / "out").exists()


def test_m_below_two(it1, frozen, tmp_path):
    proc = run("label_questions", "--base-model", it1["base"], "--iteration", "1", "--questions", it1["questions"],
               "--output", tmp_path / "out", "--m", "1", check=False)
    assert proc.returncode == 2 and "--m" in proc.stderr and "greater than or equal to 2" in proc.stderr


def test_iteration_that_does_not_follow_the_inputs(it1, frozen, tmp_path):
    # iteration 3 needs the Solver of iteration 2, but this adapter is iteration 1's
    fails_with("label_questions", "--base-model", it1["base"], "--iteration", "3", "--questions", it1["questions"],
               "--solver-adapter", it1["solver"], "--output", tmp_path / "out", message="belongs to iteration")
    # iteration 2 without the previous Solver
    fails_with("train_solver", "--base-model", it1["base"], "--iteration", "2", "--train", it1["labeled"],
               "--output", tmp_path / "out", message="pass --solver-adapter")


def test_report_tables_and_plots(it1, tmp_path):
    proc = run("report", "--run", it1["root"], "--output", tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    lines = report.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| iter |"))
    head, row = lines[at], lines[at + 2]  # the header, then the row of iteration 1 under its separator
    cells = dict(zip([c.strip() for c in head.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    assert cells["iter"] == "1"
    # every number in the row is the one in the summaries it reads
    read = {s: json.loads((it1[s] / "summary.json").read_text()) for s in ("questions", "labeled", "challenger", "evaluate")}
    assert cells["rzero_micro"] == f"{100 * read['evaluate']['scores']['rzero_micro']:.1f}"
    assert cells["generated"] == str(read["questions"]["parsed"]) and cells["kept"] == str(read["labeled"]["kept"])
    assert cells["mean p"] == f"{read['labeled']['consistency_mean']:.2f}"
    assert cells["Challenger reward"] == f"{read['challenger']['reward_mean']:.2f}"
    for png in ("scores.png", "consistency.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000
    assert "| iter |" in proc.stdout


def test_quick_build_is_deterministic_and_loads_with_no_arguments(quick_base, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    again = Path(run("build_base", "--quick", "--output", tmp_path / "again").stdout.strip().splitlines()[-1])
    assert (again / "model.safetensors").read_bytes() == (quick_base / "model.safetensors").read_bytes()
    tokenizer = AutoTokenizer.from_pretrained(quick_base)
    model = AutoModelForCausalLM.from_pretrained(quick_base)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<|endoftext|>" and tokenizer.chat_template
    assert model.config.head_dim == 64
    digits = tokenizer.convert_ids_to_tokens(tokenizer("What is 1234 + 56?").input_ids)
    assert [t.replace("Ġ", "") for t in digits if t.replace("Ġ", "").isdigit()] == list("123456")


@pytest.mark.parametrize("evaluation, expected", [
    (dict(scores={"rzero_micro_ops1": 0.9, "rzero_micro": 0.5, "rzero_micro_ops2": 0.4}), "rzero_micro"),  # the group
    (dict(scores={"rzero_amc23": 0.3}, paper={"MATH-avg": 0.3, "Overall": None}), "MATH-avg"),  # math only
    (dict(scores={"rzero_amc23": 0.3}, paper={"MATH-avg": 0.3, "Overall": 0.2}), "Overall"),  # the full suite
    (dict(scores={"rzero_gsm8k": 0.3, "rzero_bbeh": 0.1}), "rzero_gsm8k"),  # no group: the first task
    (dict(scores={}), None),
])
def test_the_score_plot_follows_the_headline_score(evaluation, expected):
    from report import headline

    assert headline(evaluation) == expected
