"""The GPU check script (tests/gpu/gpu_check.py) as far as a CPU can check it: it imports, parses its
arguments, builds a Qwen3Config of Qwen3-4B's shape (on the meta device: no memory), and passes only
flags that the stages have. Its run needs a GPU: the `gpu` test below, skipped visibly without CUDA."""

import importlib.util
import re
import subprocess
import sys

import pytest

from stage_helpers import ROOT, run

SCRIPT = ROOT / "tests" / "gpu" / "gpu_check.py"


def load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_arguments_and_the_qwen3_4b_shape_on_the_meta_device():
    import torch
    from transformers import AutoModelForCausalLM

    import gpu_memory

    check = load()
    a = check.parse_args(["--work", "/tmp/x"])
    assert (a.num_samples, a.prompts_per_step, a.max_new_tokens) == (8000, 512, 64)  # paper shapes, short lengths
    config = check.qwen3_4b_config(vocab_size=1024, eos_token_id=3, pad_token_id=0)
    assert (config.num_hidden_layers, config.hidden_size, config.num_key_value_heads, config.head_dim) == (36, 2560, 8, 128)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    assert params == gpu_memory.shape_of(config).params  # the plan counts the model the check builds
    assert params == pytest.approx(4.02e9 - (151936 - 1024) * 2560, rel=0.002)  # Qwen3-4B less the big vocabulary


def test_every_flag_it_passes_exists():
    flags = set(re.findall(r'"(--[a-z][a-z-]*)"', SCRIPT.read_text()))
    own = {"--work", "--num-samples", "--questions", "--prompts-per-step", "--max-new-tokens", "--timeout", "--only"}
    serve = {"--port", "--gpu-memory-utilization", "--max-model-len", "--enable-lora", "--max-lora-rank",
             "--lora-modules", "--seed"}  # vllm serve 0.31's (vllm/engine/arg_utils.py, entrypoints cli_args.py)
    helps = "".join(run(s, "--help").stdout for s in ("generate_questions", "label_questions", "train_challenger",
                                                       "train_solver", "evaluate", "build_base"))
    unknown = [f for f in flags - serve if f not in helps and f not in own]
    assert not unknown, unknown


def test_it_refuses_to_run_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the gpu test runs the check itself")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--work", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "GPU CHECK FAILED: no CUDA device" in proc.stderr


@pytest.mark.gpu
def test_the_gpu_check_passes(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--work", str(tmp_path)], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "| 3 train_challenger (Solver in-process) |" in proc.stdout
