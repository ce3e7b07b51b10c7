"""Beyond one process: the training stages under `accelerate launch --num_processes 2` (gloo on this
CPU), QLoRA's 4-bit base, and the accelerate configs that ship in stages/accelerate/. DeepSpeed and
FSDP themselves need GPUs (tests/gpu/); here their configs are parsed and turned into accelerate's
plugins, as `accelerate launch` does."""

import json
import os
import random
import socket
import sys
from pathlib import Path

import pytest

from stage_helpers import ROOT, TINY, run

CONFIGS = ROOT / "stages" / "accelerate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(hub, script: str, *args, processes: int = 2):
    """stages/<script>.py under `accelerate launch` with the shipped DDP config, as the driver runs it."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", CONFIGS / "ddp.yaml",
               "--num_processes", processes, "--main_process_port", free_port(), ROOT / "stages" / f"{script}.py",
               *args]
    proc = hub.run([str(a) for a in command], env={"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
                                                   "OMP_NUM_THREADS": "1"}, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"{script} under accelerate exited {proc.returncode}\n{proc.stderr[-6000:]}")
    return proc


def labeled(base: Path, out: Path) -> Path:
    """A complete labeled artifact of iteration 1 whose label is "answer": the quick base copies
    `\\boxed{answer}` from the Solver prompt now and then, so its groups get mixed rewards."""
    import artifacts
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(0)
    questions = [f"What is {rng.randint(0, 9)} + {rng.randint(0, 9)} * {rng.randint(0, 9)}?" for _ in range(8)]
    out.mkdir(parents=True)
    pq.write_table(pa.table(dict(question=questions, label=["answer"] * 8, consistency=[0.5] * 8)),
                   out / "train.parquet")
    summary = dict(stage="label_questions", iteration=1, base_identity=artifacts.base_identity(str(base)))
    (out / artifacts.SUMMARY).write_text(json.dumps(summary))
    (out / artifacts.DONE).write_text("test\n")
    return out


def commits(hub, repo: str, branch: str) -> list[str]:
    proc = hub.python("import json, sys\nfrom huggingface_hub import HfApi\n"
                      "commits = HfApi().list_repo_commits(sys.argv[1], revision=sys.argv[2])\n"
                      "print(json.dumps([c.title for c in commits]))",
                      repo, branch)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_ranks(hub, quick_base, tmp_path_factory) -> dict:
    """Both training stages of iteration 1, each on two processes, each pushing to the Hub server."""
    d = tmp_path_factory.mktemp("ddp")
    common = ["--base-model", quick_base, "--iteration", "1"]
    micro = ["--micro-batch-size", "4"]  # 2 prompts x 4 completions = 8 per step: 4 on each rank
    challenger = launch(hub, "train_challenger", *common, "--output", d / "challenger", *TINY["challenger"], *micro,
                        "--backend", "hf", "--hub-repo", f"{hub.user}/ddp-challenger")
    train = labeled(quick_base, d / "labeled")
    solver = launch(hub, "train_solver", *common, "--train", train, "--output", d / "solver", *TINY["solver"], *micro,
                    "--hub-repo", f"{hub.user}/ddp-solver")
    return dict(dir=d, base=quick_base, logs=dict(challenger=challenger.stderr, solver=solver.stderr))


@pytest.mark.parametrize("role", ["challenger", "solver"])
def test_two_processes_write_one_adapter_one_summary_one_push(two_ranks, hub, role):
    import equivalence
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = two_ranks["dir"] / role
    assert sorted(p.name for p in out.iterdir()) == ["DONE", "README.md", "adapter_config.json",
                                                     "adapter_model.safetensors", "summary.json"]
    assert not list(two_ranks["dir"].glob(".*partial"))  # no leftover of a second rank
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and len(summary["history"]) == summary["steps"] == 2
    assert set(summary["verifier_failures"]) == set(equivalence.FAILURE_KEYS)  # both ranks' counts, summed
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # it moved from its zero init
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(two_ranks["base"]), out)
    log = two_ranks["logs"][role]
    assert log.count(f"train_{role}: iteration 1 done") == 1 and "| 2 processes |" in log  # one closing line
    assert log.count("step 2/2 |") == 1  # step lines from the main process only
    assert commits(hub, f"{hub.user}/ddp-{role}", "iter01").count(f"train_{role}, iteration 1") == 1  # one push


@pytest.mark.parametrize("role", ["challenger", "solver"])
def test_two_ranks_split_each_step_not_double_it(two_ranks, role):
    # 2 prompts x 4 completions per step in all, 4 on each rank: the step's size does not grow with the ranks
    assert "GRPO: 16 completions scored by 2 process(es) in 2 steps (2 prompts x 4 completions per step)" \
        in two_ranks["logs"][role]


def test_the_cross_rank_penalty_equals_the_single_process_one():
    # each rank scores its own completions, r_rep over every rank's: the values one process gives
    import rzero

    rng = random.Random(3)
    qs = [f"What is {rng.randint(0, 9)} + {rng.randint(0, 9)}?" for _ in range(5)]
    completions = [f"<question>{rng.choice(qs)}</question>" if rng.random() < 0.85 else "no question"
                   for _ in range(16)]

    def solve(questions, n):  # deterministic: the vote's consistency depends on the question only
        return [[f"\\boxed{{{(len(q) + i) % 3}}}" for i in range(n)] for q in questions]

    whole, metrics = rzero.challenger_rewards(completions, solve, 4)
    assert metrics["penalty"] > 0  # the batch has repeats, so the penalty matters
    halves = [rzero.challenger_rewards(completions[i:i + 8], solve, 4, batch=completions, offset=i)[0]
              for i in (0, 8)]
    assert halves[0] + halves[1] == whole
    alone = [rzero.challenger_rewards(completions[i:i + 8], solve, 4)[0] for i in (0, 8)]
    assert alone[0] + alone[1] != whole  # a rank's own shard alone gives other penalties
    with pytest.raises(ValueError, match="not batch"):
        rzero.challenger_rewards(completions[:8], solve, 4, batch=completions, offset=8)


def test_the_challenger_stage_scores_its_shard_against_the_whole_batch(monkeypatch):
    # the stage's reward asks for every rank's completions (grpo.whole_batch) and keeps its own slice
    import grpo
    import rzero
    import train_challenger

    completions = [f"<question>What is {i % 3} + 1?</question>" for i in range(8)]
    monkeypatch.setattr(grpo, "whole_batch", lambda mine: (completions, 4))  # this rank: the second half

    def solve(questions, n):
        return [["\\boxed{1}", "\\boxed{2}"] * (n // 2) for _ in questions]

    rewards = train_challenger.reward_function(solve, 4, 0.5, 1.0)(completions[4:])
    assert rewards == rzero.challenger_rewards(completions, solve, 4)[0][4:]
    assert rewards != rzero.challenger_rewards(completions[4:], solve, 4)[0]  # its shard alone differs


def test_counts_are_summed_and_the_batch_joined_over_the_ranks(monkeypatch):
    # what the collectives bring back (rank 1 of 2 here), turned into the stage's numbers
    import grpo

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(grpo, "gathered", lambda items: [{"checked": 3, "failed": 1}, {"checked": 4, "failed": 0}]
                        if isinstance(items[0], dict) else [["a", "b", "c"], ["d", "e"]])
    assert grpo.summed({"checked": 4, "failed": 0}) == {"checked": 7, "failed": 1}
    assert grpo.whole_batch(["d", "e"]) == (["a", "b", "c", "d", "e"], 3)


def test_the_batch_check_counts_the_processes(monkeypatch, capsys):
    import grpo

    monkeypatch.setenv("WORLD_SIZE", "2")
    grpo.check_batches(2, 4, 4)  # 8 completions: 4 per rank
    with pytest.raises(SystemExit):
        grpo.check_batches(2, 4, 8)
    assert "--micro-batch-size 8 x 2 processes must divide prompts-per-step x group-size = 8" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--quantization", "8bit"], "--quantization '8bit': use none or 4bit"),
    (["--vllm-mode", "remote"], "--vllm-mode 'remote': use colocate or server"),
    (["--vllm-mode", "server"], "--vllm-mode server needs --vllm-server-url"),
    (["--vllm-mode", "server", "--vllm-server-url", "http://127.0.0.1:8000", "--quantization", "4bit"],
     "--quantization 4bit cannot use --vllm-mode server"),
])
def test_impossible_modes_are_refused_before_any_work(quick_base, tmp_path, flags, message):
    proc = run("train_challenger", "--base-model", quick_base, "--iteration", "1", "--output", tmp_path / "c",
               *TINY["challenger"], *flags, check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert not list(tmp_path.iterdir())


def test_a_4bit_solver_trains_and_its_adapter_loads_on_the_full_precision_base(quick_base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    train = labeled(quick_base, tmp_path / "labeled")
    out = tmp_path / "solver"
    proc = run("train_solver", "--base-model", quick_base, "--iteration", "1", "--train", train, "--output", out,
               *TINY["solver"], "--quantization", "4bit")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["args"]["quantization"] == "4bit" and len(summary["history"]) == 2
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and {m.rsplit(".", 1)[-1] for m in config["target_modules"]} == {  # all linear layers
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(quick_base), out)  # fp32 base
    assert not any("Linear4bit" in type(m).__name__ for m in model.modules())
    assert "done in" in proc.stderr


def test_the_4bit_base_is_nf4_with_double_quantization(quick_base):
    import generation
    import torch

    model = generation.load_model(str(quick_base), quantization="4bit")
    layer = model.model.layers[0].self_attn.q_proj
    assert type(layer).__name__ == "Linear4bit"
    assert layer.weight.quant_state.quant_type == "nf4" and layer.weight.quant_state.nested  # double quantization
    config = model.config.quantization_config
    assert config.bnb_4bit_use_double_quant and config.bnb_4bit_compute_dtype == torch.float32  # no bf16 on a CPU


def _launch_env(config: str) -> dict:
    """What `accelerate launch --config_file <config> --num_processes 2` hands its processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / config), "--num_processes", "2",
                                               "stages/train_solver.py"])
    args, defaults, _ = _validate_launch_command(args)
    assert args.num_processes == 2  # the command line overrides the file's 8
    if args.use_deepspeed:  # as launch_command does before the DeepSpeed launcher
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if defaults.mixed_precision else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


def test_the_ddp_config_launches_one_process_per_gpu():
    env = _launch_env("ddp.yaml")
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"  # precision is the stage's (bf16 on GPUs), not the launcher's
    assert "ACCELERATE_USE_DEEPSPEED" not in env and "ACCELERATE_USE_FSDP" not in env


def test_the_zero3_config_shards_and_gathers_the_adapter_to_save_it(monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    for key, value in _launch_env("zero3.yaml").items():
        monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == 3
    assert plugin.deepspeed_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert os.environ["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_the_fsdp2_config_is_version_2_with_a_full_state_dict(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin

    for key, value in _launch_env("fsdp2.yaml").items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.state_dict_type.name == "FULL_STATE_DICT"
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
