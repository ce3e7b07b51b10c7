"""One-shot GPU check of the whole kit at Qwen3-4B's shape, in about 10 minutes of one GPU (not yet run:
no GPU was available where it was written). Weights cannot be downloaded there, so it builds a
random-weight model of Qwen3-4B's shape around the micro-world tokenizer, then runs every stage once,
as the driver does, at the paper's batch shapes with short lengths:

  1. generate_questions  N samples through vLLM with a rank-64 Challenger adapter: every sample distinct
  2. label_questions     m = 10 answers per question through vLLM (questions from the held-out set)
  3. train_challenger    one step, the Solver in-process (the memory plan: Solver + TRL + trainer)
  4. train_challenger    one step, the Solver behind `vllm serve` (the plan's share, --backend server)
  5. train_solver        one step
  6. evaluate            lm-eval's vllm backend with the Solver adapter
  7. train_challenger    one step on the quick micro-world base, whose completions do hold questions,
                         so the in-process Solver really answers inside the reward

Random weights never write the formats, so steps 3-5 on the 4B model end, as they should, with the
"rewards carry no signal after step 1" error: the step itself (generation, reward, backward, weight
sync) ran. Every sample runs to its max tokens: the worst case for memory. It prints wall time and
peak GPU memory per stage and fails loudly, with the stage's log tail, on the first thing that goes wrong.

  python tests/gpu/gpu_check.py --work /tmp/gpu-check            # paper shapes (512 prompts per step)
  python tests/gpu/gpu_check.py --work /tmp/gpu-check --prompts-per-step 64 --num-samples 2000  # quicker
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ROOT / "stages"
OFFLINE = dict(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
# Qwen3-4B(-Base)'s config.json, less its vocabulary (the micro-world tokenizer's is used)
QWEN3_4B = dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, max_position_embeddings=32768, rope_theta=1_000_000,
                rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu")
PORT = 8011


class CheckFailed(RuntimeError):
    pass


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="One-shot GPU check of every stage at Qwen3-4B's shape.")
    p.add_argument("--work", type=Path, required=True, help="scratch folder (the 4B model takes 8 GB there)")
    p.add_argument("--num-samples", type=int, default=8000, help="N for generate_questions (paper: 8000)")
    p.add_argument("--questions", type=int, default=512, help="questions to label, m = 10 answers each")
    p.add_argument("--prompts-per-step", type=int, default=512, help="training prompts per step (paper: 512)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="short lengths keep it under 10 minutes")
    p.add_argument("--timeout", type=int, default=420, help="seconds per stage before it counts as hung")
    p.add_argument("--only", default="", help="comma-separated step numbers to run (default: all)")
    return p.parse_args(argv)


def qwen3_4b_config(vocab_size: int, eos_token_id: int, pad_token_id: int):
    """A transformers Qwen3Config of Qwen3-4B's shape for a tokenizer of vocab_size tokens."""
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=max(1024, -(-vocab_size // 64) * 64), eos_token_id=eos_token_id,
                       pad_token_id=pad_token_id, bos_token_id=None, **QWEN3_4B)


class PeakMemory:
    """Peak used GPU memory (all processes, GiB) between start() and stop(), polled by NVML."""

    def __init__(self):
        import pynvml

        pynvml.nvmlInit()
        self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        self.total = pynvml.nvmlDeviceGetMemoryInfo(self._handle).total / 2**30

    def used(self) -> float:
        return self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**30

    def __enter__(self):
        self.peak, self._stop = self.used(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self.used())

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()


def stage(name: str, args: list, logs: Path, timeout: int, expect_rc: int = 0, expect: tuple[str, ...] = ()) -> str:
    """Run one stage script; fail with its log tail unless it exits expect_rc and logs every `expect`."""
    log = logs / f"{name}.log"
    cmd = [sys.executable, str(STAGES / args[0]), *map(str, args[1:])]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **OFFLINE}, capture_output=True, text=True,
                              timeout=timeout)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as error:
        out, rc = f"{error.stdout or ''}{error.stderr or ''}\nTIMEOUT after {timeout} s", "timeout"
    log.write_text(out if isinstance(out, str) else out.decode(errors="replace"))
    missing = [e for e in expect if e not in log.read_text()]
    if rc != expect_rc or missing:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise CheckFailed(f"{name}: exit {rc} (expected {expect_rc}), missing {missing}; {log}:\n{tail}")
    return log.read_text()


def build_models(work: Path, quick: Path) -> tuple[Path, Path]:
    """The random 4B base (tokenizer, template and held-out set of the quick base) and a rank-64
    all-linear adapter with nonzero B, as a finished Challenger/Solver artifact of iteration 1."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, adapter = work / "q4b-random", work / "lora64"
    if (base / "model.safetensors.index.json").exists() and (adapter / "DONE").exists():
        return base, adapter
    tokenizer = AutoTokenizer.from_pretrained(quick)
    config = qwen3_4b_config(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    for extra in ("chat_template.jinja", "heldout.jsonl"):  # not summary.json: this base has its own identity
        if (quick / extra).exists():
            shutil.copy(quick / extra, base / extra)
    peft = get_peft_model(model, LoraConfig(r=64, lora_alpha=128, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, weight in peft.named_parameters():
            if "lora_B" in name:
                weight.normal_(std=1e-3)
    peft.save_pretrained(adapter)
    sys.path.insert(0, str(STAGES))
    import artifacts

    (adapter / "summary.json").write_text(json.dumps(dict(iteration=1, base_identity=artifacts.base_identity(str(base)))))
    (adapter / "DONE").write_text("")
    del model, peft
    torch.cuda.empty_cache()
    return base, adapter


def questions_artifact(base: Path, out: Path, count: int) -> Path:
    """A questions artifact of held-out micro-world questions (random weights write none)."""
    import pandas as pd

    sys.path.insert(0, str(STAGES))
    import artifacts

    rows = [json.loads(line) for line in (base / "heldout.jsonl").read_text().splitlines()]
    questions = [rows[i % len(rows)]["question"] + ("" if i < len(rows) else f" (variant {i})") for i in range(count)]
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(dict(sample_id=range(count), completion=[f"<question>{q}</question>" for q in questions],
                      question=questions)).to_parquet(out / "questions.parquet")
    (out / "summary.json").write_text(json.dumps(dict(iteration=1, base_identity=artifacts.base_identity(str(base)))))
    (out / "DONE").write_text("")
    return out


def train_artifact(base: Path, out: Path, count: int) -> Path:
    """A labeled artifact (train.parquet) of held-out questions with their true answers as labels."""
    import pandas as pd

    sys.path.insert(0, str(STAGES))
    import artifacts

    rows = [json.loads(line) for line in (base / "heldout.jsonl").read_text().splitlines()]
    picked = [rows[i % len(rows)] for i in range(count)]
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(dict(question=[r["question"] for r in picked], label=[str(r["answer"]) for r in picked],
                      consistency=[0.5] * count)).to_parquet(out / "train.parquet")
    (out / "summary.json").write_text(json.dumps(dict(iteration=1, base_identity=artifacts.base_identity(str(base)))))
    (out / "DONE").write_text("")
    return out


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        raise CheckFailed("no CUDA device: this check needs a GPU")
    import lm_eval, peft, trl, vllm  # noqa: E401 (step 0: the GPU requirements are installed)

    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | vllm {vllm.__version__} | trl {trl.__version__} | "
          f"peft {peft.__version__} | lm-eval {lm_eval.__version__}", flush=True)
    work, logs = a.work, a.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    only = {int(s) for s in a.only.split(",") if s}
    memory = PeakMemory()
    table: list[tuple[str, float, float]] = []

    def timed(label, fn):
        t0 = time.time()
        with memory:
            result = fn()
        table.append((label, time.time() - t0, memory.peak))
        print(f"{label}: {time.time() - t0:.0f} s, peak {memory.peak:.1f} GiB of {memory.total:.1f}", flush=True)
        if memory.peak > 0.97 * memory.total:
            raise CheckFailed(f"{label} used {memory.peak:.1f} of {memory.total:.1f} GiB: the plan leaves no headroom")
        return result

    quick = Path(subprocess.run([sys.executable, str(STAGES / "build_base.py"), "--quick", "--cache-dir", str(work / "rzero")],
                                cwd=ROOT, env={**os.environ, **OFFLINE}, capture_output=True, text=True,
                                check=True).stdout.split()[-1])
    base, adapter = timed("build random Qwen3-4B + rank-64 adapter", lambda: build_models(work, quick))
    n, common = a.max_new_tokens, ["--base-model", base, "--iteration", 1, "--overwrite"]
    train = ["--steps", 1, "--prompts-per-step", a.prompts_per_step, "--micro-batch-size", 8, "--max-new-tokens", n,
             "--lora-rank", 64, "--lora-alpha", 128]
    no_signal = ("step 1/1", "no signal after step 1/1", "memory plan for a")
    run = lambda k: not only or k in only

    if run(1):
        def generate():
            stage("1-generate_questions", ["generate_questions.py", *common, "--challenger-adapter", adapter,
                  "--output", work / "questions", "--num-samples", a.num_samples, "--max-new-tokens", n,
                  "--backend", "vllm"], logs, a.timeout)
            import pandas as pd

            distinct = pd.read_parquet(work / "questions" / "questions.parquet").completion.nunique()
            print(f"  distinct completions: {distinct} of {a.num_samples}", flush=True)
            if distinct < 0.99 * a.num_samples:  # vLLM seeds child i with seed + i: repeated seeds repeat samples
                raise CheckFailed(f"only {distinct} distinct completions of {a.num_samples}: sampling repeats itself")
        timed("1 generate_questions (vllm, LoRA)", generate)
    if run(2):
        q = questions_artifact(base, work / "questions-heldout", a.questions)
        timed("2 label_questions (vllm, m=10)", lambda: stage(
            "2-label_questions", ["label_questions.py", *common, "--questions", q, "--output", work / "labeled",
                                  "--m", 10, "--max-new-tokens", n, "--backend", "vllm"], logs, a.timeout))
    if run(3):
        timed("3 train_challenger (Solver in-process)", lambda: stage(
            "3-train_challenger", ["train_challenger.py", *common, "--output", work / "challenger", *train,
                                   "--group-size", 4, "--solver-max-new-tokens", n, "--backend", "vllm"],
            logs, a.timeout, expect_rc=2, expect=(*no_signal, "Solver engine")))
    if run(4):
        def with_server():
            sys.path.insert(0, str(STAGES))
            import gpu_memory
            import rzero
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(base)
            length = lambda text: len(tok(text, add_special_tokens=False).input_ids)
            plan = gpu_memory.plan(gpu_memory.shape_of(json.loads((base / "config.json").read_text())), memory.total,
                                   prompt_tokens=length(rzero.render_prompt(tok, rzero.challenger_messages())),
                                   max_new_tokens=n, micro_batch_size=8, prompts_per_step=a.prompts_per_step,
                                   group_size=4, lora_rank=64,
                                   solver_len=length(rzero.render_prompt(tok, rzero.solver_messages(""))) + 2 * n)
            solver_of_iteration_0 = work / "lora64-iter00"  # --iteration 1 takes the Solver of iteration 0
            shutil.copytree(adapter, solver_of_iteration_0, dirs_exist_ok=True)
            summary = json.loads((adapter / "summary.json").read_text())
            (solver_of_iteration_0 / "summary.json").write_text(json.dumps(dict(summary, iteration=0)))
            log = open(logs / "4-vllm-serve.log", "w")
            server = subprocess.Popen(["vllm", "serve", str(base), "--port", str(PORT), "--gpu-memory-utilization",
                                       str(plan.solver_utilization), "--max-model-len", str(plan.solver_max_model_len),
                                       "--enable-lora", "--max-lora-rank", "64", "--lora-modules", f"adapter={adapter}",
                                       "--seed", "0"], stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, **OFFLINE})
            try:
                import urllib.request

                deadline = time.time() + a.timeout
                while True:
                    if server.poll() is not None:
                        raise CheckFailed(f"vllm serve exited {server.returncode}; see {logs / '4-vllm-serve.log'}")
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2)
                        break
                    except OSError:
                        if time.time() > deadline:
                            raise CheckFailed("vllm serve not healthy in time") from None
                        time.sleep(2)
                stage("4-train_challenger-server", ["train_challenger.py", *common, "--output", work / "challenger-server",
                      *train, "--group-size", 4, "--solver-max-new-tokens", n, "--solver-adapter", solver_of_iteration_0,
                      "--backend", "server", "--server-url", f"http://127.0.0.1:{PORT}/v1"], logs, a.timeout,
                      expect_rc=2, expect=(*no_signal, "held by other processes"))
            finally:
                server.terminate()
                server.wait(60)
        timed("4 train_challenger (vllm serve)", with_server)
    if run(5):
        labeled = train_artifact(base, work / "train-heldout", a.prompts_per_step)  # random weights label nothing
        timed("5 train_solver", lambda: stage(
            "5-train_solver", ["train_solver.py", *common, "--train", labeled, "--output", work / "solver", *train,
                               "--group-size", 5], logs, a.timeout, expect_rc=2, expect=no_signal))
    if run(6):
        timed("6 evaluate (lm-eval vllm, LoRA)", lambda: stage(
            "6-evaluate", ["evaluate.py", *common, "--solver-adapter", adapter, "--tasks", "rzero_micro",
                           "--max-new-tokens", n, "--backend", "vllm", "--output", work / "evaluate"], logs, a.timeout))
    if run(7):
        timed("7 train_challenger on the quick base (Solver answers)", lambda: stage(
            "7-train_challenger-quick", ["train_challenger.py", "--base-model", quick, "--iteration", 1, "--overwrite",
                                         "--output", work / "challenger-quick", "--steps", 1, "--prompts-per-step", 64,
                                         "--group-size", 4, "--micro-batch-size", 16, "--m", 10,
                                         "--max-new-tokens", 48, "--solver-max-new-tokens", 48, "--lora-rank", 16,
                                         "--lora-alpha", 32, "--backend", "vllm"], logs, a.timeout,
            expect=("step 1/1", "memory plan for a")))

    print("\n| stage | wall time | peak GPU memory |\n|---|---|---|")
    for label, seconds, peak in table:
        print(f"| {label} | {seconds:.0f} s | {peak:.1f} GiB of {memory.total:.1f} |")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as error:
        print(f"GPU CHECK FAILED: {error}", file=sys.stderr)
        sys.exit(1)
