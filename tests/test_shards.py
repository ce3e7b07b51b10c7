"""Question generation and labeling in data-parallel shards (stages/shards.py): the cut of the work,
the same rows as one process, a shard kept or redone on a rerun, a failed shard's error, and no
shard process outliving its stage."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))

import artifacts  # noqa: E402
import shards  # noqa: E402
from stage_helpers import ROOT, env, run  # noqa: E402

# 24 samples in 3 batches of 8 (shards of 1 and 2 batches); labels in batches of 8 // 3 = 2 questions
GENERATE = ["--iteration", "1", "--num-samples", "24", "--max-new-tokens", "40", "--batch-size", "8"]
LABEL = ["--iteration", "1", "--m", "3", "--delta", "0.5", "--max-new-tokens", "40", "--batch-size", "8"]


@pytest.mark.parametrize("total, batch, n, expected", [
    (24, 8, 2, [(0, 8, 0), (8, 24, 1)]),                  # 3 batches: 1 + 2, in order, whole batches
    (25, 8, 2, [(0, 16, 0), (16, 25, 2)]),                # 4 batches, the last one short: it ends the last shard
    (10, 1, 3, [(0, 3, 0), (3, 6, 3), (6, 10, 6)]),       # vLLM's cut: single items, sizes differ by at most one
    (8, 8, 2, [(0, 0, 0), (0, 8, 0)]),                    # fewer batches than shards: an empty shard, not an error
    (0, 4, 2, [(0, 0, 0), (0, 0, 0)]),                    # nothing to do
])
def test_shards_cut_the_work_in_whole_batches_in_order(total, batch, n, expected):
    got = [shards.work(total, batch, (i, n)) for i in range(n)]
    assert got == expected
    assert shards.work(total, batch, None) == (0, total, 0)  # no shard: all of it


@pytest.mark.parametrize("spec, expected", [("", None), ("0/2", (0, 2)), ("7/8", (7, 8))])
def test_shard_spec(spec, expected):
    assert shards.parse(spec) == expected


@pytest.mark.parametrize("spec", ["2/2", "1", "-1/2", "a/b", "1/0"])
def test_a_bad_shard_spec_is_an_error_that_says_the_form(spec, capsys):
    with pytest.raises(SystemExit) as e:
        shards.parse(spec)
    assert e.value.code == 2 and "use i/n with 0 <= i < n" in capsys.readouterr().err


def test_shard_seeds_and_flags():
    assert shards.seed(5, None, "vllm") == 5
    assert shards.seed(5, (1, 4), "hf") == 5                   # hf shards skip ahead in one sequence instead
    assert [shards.seed(5, (i, 4), "vllm") for i in range(4)] == [20, 21, 22, 23]  # engines never share a seed
    # the flags that make a shard's rows, not where it goes or how it is pushed
    args = dict(base_model="b", output="o", overwrite=True, hub_repo="me/x", data_parallel=2, shard="0/2",
                num_samples=24, top_p=0.95)
    assert shards.flags(args) == ["--base-model", "b", "--num-samples", "24", "--top-p", "0.95"]


def test_a_shard_is_kept_only_when_complete_with_the_same_flags(tmp_path):
    output = tmp_path / "questions"
    partial = shards.begin(output, (0, 2), ["--seed", "0"])
    assert partial.name == ".0-of-2.partial" and partial.parent == tmp_path / ".questions.shards"
    artifacts.finish(partial, shards.folder(output, 0, 2), dict(flags=["--seed", "0"]))
    assert shards.begin(output, (0, 2), ["--seed", "0"]) is None          # complete, same flags: kept
    redo = shards.begin(output, (0, 2), ["--seed", "1"])                  # other flags: redone
    assert redo is not None and not any(redo.iterdir())


def rows(path: Path, name: str) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path / name).to_pylist()


@pytest.fixture(scope="module")
def one_process(quick_base, tmp_path_factory) -> dict:
    """Questions and labels made by one process, the reference for the sharded runs."""
    d = tmp_path_factory.mktemp("one")
    run("generate_questions", "--base-model", quick_base, *GENERATE, "--output", d / "questions")
    run("label_questions", "--base-model", quick_base, *LABEL, "--questions", d / "questions",
        "--output", d / "labeled")
    return dict(questions=d / "questions", labeled=d / "labeled")


def test_two_shards_give_the_rows_of_one_process(quick_base, one_process, tmp_path):
    # the transformers backend: each shard starts at its first batch's seed, so the rows are the same
    questions, labeled = tmp_path / "questions", tmp_path / "labeled"
    run("generate_questions", "--base-model", quick_base, *GENERATE, "--output", questions, "--data-parallel", "2")
    assert rows(questions, "questions.parquet") == rows(one_process["questions"], "questions.parquet")
    proc = run("label_questions", "--base-model", quick_base, *LABEL, "--questions", questions, "--output", labeled,
               "--data-parallel", "2")
    for name in ("labeled.parquet", "train.parquet"):
        assert rows(labeled, name) == rows(one_process["labeled"], name), name
    one, two = artifacts.read_summary(one_process["labeled"]), artifacts.read_summary(labeled)
    assert two["data_parallel"] == 2 and one["data_parallel"] == 1
    for key in ("questions", "distinct", "kept", "consistency_histogram", "pseudo_label_accuracy"):
        assert two[key] == one[key], key
    # the verifier's counts, summed over the shards: test_method's scripted Solver, where they are not 0
    assert two["verifier_failures"] == one["verifier_failures"]
    assert re.search(r"shard 1/2 on the CPU \(OMP_NUM_THREADS=\d+\)", proc.stderr)
    # the merged artifact is the one-process layout; the shards are gone once it is complete
    assert sorted(p.name for p in labeled.iterdir()) == sorted(p.name for p in one_process["labeled"].iterdir())
    assert not (tmp_path / ".questions.shards").exists() and not (tmp_path / ".labeled.shards").exists()


def test_a_complete_shard_is_kept_and_a_killed_one_redone(quick_base, one_process, tmp_path):
    questions = tmp_path / "questions"
    run("generate_questions", "--base-model", quick_base, *GENERATE, "--output", questions, "--shard", "0/2")
    kept = shards.folder(questions, 0, 2)
    assert artifacts.is_complete(kept) and not questions.exists()  # a shard alone is not the artifact
    killed = kept.parent / ".1-of-2.partial"  # what a shard killed halfway leaves
    killed.mkdir()
    (killed / "questions.parquet").write_text("half")
    proc = run("generate_questions", "--base-model", quick_base, *GENERATE, "--output", questions,
               "--data-parallel", "2")
    assert "1 of 2 shards are complete with these flags and kept" in proc.stderr
    assert "shard 0/2 on" not in proc.stderr and "shard 1/2 on" in proc.stderr
    assert not kept.parent.exists()  # merged, then cleared
    assert rows(questions, "questions.parquet") == rows(one_process["questions"], "questions.parquet")
    # --overwrite redoes every shard, not only the merge
    run("generate_questions", "--base-model", quick_base, *GENERATE, "--output", questions, "--shard", "0/2")
    proc = run("generate_questions", "--base-model", quick_base, *GENERATE, "--output", questions, "--data-parallel",
               "2", "--overwrite")
    assert "shards are complete" not in proc.stderr and "shard 0/2 on" in proc.stderr


def test_a_failed_shard_fails_the_stage_with_its_log(quick_base, tmp_path):
    output = tmp_path / "questions"
    proc = run("generate_questions", "--base-model", quick_base, *GENERATE, "--output", output, "--data-parallel", "2",
               "--backend", "server", "--server-url", "http://127.0.0.1:9/v1", check=False)
    assert proc.returncode == 2
    assert "shard 0/2 exited 1 (failed: 0, 1); the end of its log:" in proc.stderr
    assert "Connection refused" in proc.stderr and "the complete shards are kept" in proc.stderr
    assert not output.exists() and not artifacts.is_complete(shards.folder(output, 0, 2))


def test_a_shard_refuses_to_push_or_to_shard_again(quick_base, tmp_path):
    proc = run("generate_questions", "--base-model", quick_base, *GENERATE, "--output", tmp_path / "q",
               "--shard", "0/2", "--data-parallel", "2", check=False)
    assert proc.returncode == 2 and "pass --hub-repo and --data-parallel to that run" in proc.stderr


def test_no_shard_outlives_its_stage(quick_base, tmp_path):
    output = tmp_path / "questions"
    proc = subprocess.Popen([sys.executable, str(ROOT / "stages" / "generate_questions.py"), "--base-model",
                             str(quick_base), *GENERATE, "--num-samples", "4000", "--output", str(output),
                             "--data-parallel", "2"], cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.time() + 120
    while time.time() < deadline and len(children.read_text().split()) < 2:
        time.sleep(0.2)
    pids = [int(p) for p in children.read_text().split()]
    assert len(pids) == 2
    os.kill(proc.pid, signal.SIGKILL)  # the stage dies without a chance to clean up
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(alive(p) for p in pids)
    assert not output.exists() and not any(artifacts.is_complete(shards.folder(output, i, 2)) for i in range(2))


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
