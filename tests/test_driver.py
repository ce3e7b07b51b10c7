"""run_iteration.sh: killed once inside each stage in turn, a rerun completes with the same set of
artifacts as an uninterrupted run (quick base, tiny knobs)."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from stage_helpers import ROOT, env

# One iteration in about a minute on the quick base; each knob is the driver's own.
KNOBS = dict(ITERATIONS="1", RUN="t", N="16", M="3", DELTA="0.5", CHALLENGER_STEPS="1", CHALLENGER_PROMPTS_PER_STEP="2",
             SOLVER_STEPS="1", SOLVER_PROMPTS_PER_STEP="2", MICRO_BATCH_SIZE="2", MAX_NEW_TOKENS="32",
             CHALLENGER_MAX_NEW_TOKENS="24", LORA_RANK="4",
             EVAL_TASKS="rzero_micro", EVAL_MAX_NEW_TOKENS="32")
STAGE_FOLDERS = ["iter00/evaluate", "iter01/challenger", "iter01/questions", "iter01/labeled", "iter01/solver",
                 "iter01/evaluate"]


def driver(base: Path, runs: Path) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(ROOT / "run_iteration.sh")], cwd=ROOT, start_new_session=True,
                            env=env(BASE_MODEL=str(base), RUNS_DIR=str(runs), PYTHON=os.sys.executable, **KNOBS),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def artifact_files(runs: Path) -> set[str]:
    """Every file a run leaves, by relative path, without the logs that record how it went."""
    skip = {"run.log", "stage_times.tsv"}
    return {str(p.relative_to(runs)) for p in runs.rglob("*") if p.is_file() and p.name not in skip}


def test_driver_resumes_after_a_kill_inside_each_stage(quick_base, tmp_path):
    whole = tmp_path / "whole"
    proc = driver(quick_base, whole)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    expected = artifact_files(whole)
    assert all(f"t/{folder}/DONE" in expected for folder in STAGE_FOLDERS)
    assert "t/report/report.md" in expected

    killed = tmp_path / "killed"
    for folder in STAGE_FOLDERS:
        partial = killed / "t" / Path(folder).parent / f".{Path(folder).name}.partial"
        proc = driver(quick_base, killed)
        deadline = time.time() + 600
        while not partial.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert partial.exists(), f"the driver never started {folder}"
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the stage it runs
        proc.wait()
        assert not (killed / "t" / folder / "DONE").exists()
    proc = driver(quick_base, killed)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    assert artifact_files(killed) == expected
    assert not list(killed.rglob("*.partial"))
    # the resumed run did the same work: the same settings and counts in the summaries (sampled contents
    # may differ: CPU runs are not bit-identical)
    for folder, key in (("iter01/questions", "num_samples"), ("iter01/labeled", "label_source"), ("iter01/solver", "steps")):
        whole_value, killed_value = (json.loads((r / "t" / folder / "summary.json").read_text())[key] for r in (whole, killed))
        assert whole_value == killed_value, (folder, key)
    solver = json.loads((killed / "t" / "iter01" / "solver" / "summary.json").read_text())
    assert solver["steps"] == len(solver["history"]) == int(KNOBS["SOLVER_STEPS"])
    # the Challenger's own cap reached both stages that sample it, and only them
    caps = {stage: json.loads((whole / "t" / "iter01" / stage / "summary.json").read_text())["args"]["max_new_tokens"]
            for stage in ("challenger", "questions", "labeled", "solver")}
    assert {stage: int(cap) for stage, cap in caps.items()} == dict(challenger=24, questions=24, labeled=32, solver=32)

def test_the_control_is_one_knob_and_an_old_knob_name_still_works(quick_base, tmp_path):
    # CHALLENGER=base: no Challenger is trained, the untrained base writes the questions (the paper's
    # "Base Challenger"); LABELS, the old name of LABEL_SOURCE, still works for one release, with a notice;
    # DATA_PARALLEL=2 generates and labels in two shards (their rows: tests/test_shards.py); PROBE votes a gold
    # probe set (GSM8K's train schema) beside the questions (its numbers: tests/test_method.py)
    proc = subprocess.run(["bash", str(ROOT / "run_iteration.sh")], cwd=ROOT, capture_output=True, text=True,
                          env=env(BASE_MODEL=str(quick_base), RUNS_DIR=str(tmp_path), PYTHON=os.sys.executable,
                                  **{**KNOBS, "CHALLENGER": "base", "LABELS": "vote", "DATA_PARALLEL": "2",
                                     "PROBE": f"{ROOT}/tests/fixtures/benchmarks/openai/gsm8k:main:train"}),
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "LABELS is renamed LABEL_SOURCE" in proc.stderr
    it = tmp_path / "t" / "iter01"
    assert not (it / "challenger").exists()
    assert json.loads((it / "questions" / "summary.json").read_text())["challenger"] == "base (control)"
    labeled = json.loads((it / "labeled" / "summary.json").read_text())
    # the knob reached the stage under its old name (LABEL_SOURCE=truth itself is test_method's: the quick
    # base's questions are rarely scorable arithmetic, so a truth run here would keep nothing)
    assert labeled["label_source"] == "vote" and (it / "solver" / "DONE").is_file()
    assert labeled["data_parallel"] == 2 and labeled["probe"]["questions"] == 2
    assert (it / "labeled" / "probe.parquet").is_file()
    assert json.loads((it / "questions" / "summary.json").read_text())["data_parallel"] == 2


@pytest.mark.parametrize("knob, value, message", [
    ("DISTRIBUTED", "deepspeed", "DISTRIBUTED=deepspeed: use none, ddp, zero3 or fsdp2"),
    ("TRL_VLLM", "remote", "TRL_VLLM=remote: use colocate or server"),
])
def test_an_unknown_distribution_knob_stops_before_any_work(tmp_path, knob, value, message):
    proc = subprocess.run(["bash", str(ROOT / "run_iteration.sh")], cwd=ROOT, capture_output=True, text=True,
                          env=env(RUNS_DIR=str(tmp_path), PYTHON=os.sys.executable, **{knob: value}), timeout=60)
    assert proc.returncode == 2 and message in proc.stderr
    assert not list(tmp_path.iterdir())  # not even the run's folder
