"""The one-GPU memory plan (stages/gpu_memory.py) as a table: which runs fit which cards, what each
engine gets, and the errors before any work. Pure arithmetic, so it runs on any CPU."""

import json
import subprocess
import sys

import pytest

import gpu_memory as gm
from stage_helpers import ROOT

# Qwen3-4B(-Base)'s config.json, the fields the plan reads
QWEN3_4B = dict(num_hidden_layers=36, hidden_size=2560, intermediate_size=9728, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True)
Q4B = gm.shape_of(QWEN3_4B)
CARD_80GB = 79.2  # what torch reports for an 80 GB H100 / A100, GiB
# the paper's lengths with the driver's one-GPU batches: 4,096 new tokens for both roles, micro-batches of 8
CHALLENGER = dict(prompt_tokens=256, max_new_tokens=4096, micro_batch_size=8, prompts_per_step=64, group_size=4,
                  lora_rank=64, solver_len=256 + 4096 + 4096)
SOLVER = dict(prompt_tokens=512, max_new_tokens=4096, micro_batch_size=8, prompts_per_step=128, group_size=5, lora_rank=64)


def test_qwen3_4b_shape():
    assert Q4B.params == pytest.approx(4.02e9, rel=0.005)  # Qwen3-4B: 4.0B parameters
    assert Q4B.kv_gib_per_token * 2**20 == 144  # KiB per token: 36 layers x 8 KV heads x 128 x K,V x bf16
    assert Q4B.lora_params(64) == pytest.approx(132.1e6, rel=0.001)  # rank 64 on all linear layers


@pytest.mark.parametrize("card, lengths, solver_share, trl_share", [
    # the driver's defaults on one 80 GB card: Solver in-process + TRL colocated + trainer
    (CARD_80GB, CHALLENGER, 0.55, 0.25),
    # the Solver stage alone: TRL takes what the trainer leaves (asleep in backward, the activations reuse it)
    (CARD_80GB, SOLVER, None, 0.81),
    # an H200 (the GPU check's card): the Solver's share grows, TRL keeps its minimum
    (139.8, CHALLENGER, 0.72, 0.14),
    # SOLVER_SERVER=1: `vllm serve` already holds the in-process share on this card
    (CARD_80GB, dict(CHALLENGER, solver_len=None, used_gib=0.55 * CARD_80GB + 0.75), None, 0.25),
])
def test_plans_that_fit(card, lengths, solver_share, trl_share):
    plan = gm.plan(Q4B, card, **lengths)
    assert plan.solver_utilization == solver_share and plan.trl_utilization == trl_share
    assert plan.trl_max_model_len == lengths["prompt_tokens"] + lengths["max_new_tokens"] and plan.trl_sleep
    assert plan.solver_max_model_len == lengths.get("solver_len")
    used = (plan.solver_utilization or 0) + plan.trl_utilization + lengths.get("used_gib", 0) / card
    trainer = (plan.gib["weights"] + plan.gib["lora_states"]) / card
    assert used + trainer <= 1 - gm.HEADROOM  # nothing is planned twice: the sum stays under the card
    assert plan.trl_utilization * card >= plan.gib["activations"]  # the sleeping TRL share holds the backward pass
    kv = lambda share, length: (share * card - Q4B.weights_gib - gm.ENGINE_OVERHEAD_GIB) / Q4B.kv_gib_per_token / length
    assert kv(plan.trl_utilization, plan.trl_max_model_len) >= gm.MIN_SEQUENCES - 0.5
    if plan.solver_utilization:
        assert kv(plan.solver_utilization, plan.solver_max_model_len) >= gm.MIN_SEQUENCES
    assert f"{plan.trl_utilization:.2f}" in plan.line() and "sleep mode on" in plan.line()


@pytest.mark.parametrize("card, lengths, message", [
    # a 24 GB card cannot hold two 4B engines and the trainer
    (23.6, CHALLENGER, "needs about 63 GiB"),
    # nor the Solver stage at 4,096 new tokens
    (23.6, SOLVER, "the card has 23.6 GiB"),
    # an 80 GB card with the context stretched to 32k: the activations alone overflow
    (CARD_80GB, dict(SOLVER, max_new_tokens=32768), "activations"),
    # 80 GB with the Solver answering in 32k tokens: its engine cannot hold 16 such sequences beside the rest
    (CARD_80GB, dict(CHALLENGER, solver_len=256 + 4096 + 32768), "Solver engine"),
    # TRL pins max_num_batched_tokens at 4096 and sets max_num_seqs = prompts x group
    (CARD_80GB, dict(SOLVER, prompts_per_step=1024), "Use --prompts-per-step 819 or fewer"),
    # 4096 exactly is allowed, 4097 is not (here 683 x 6 = 4098)
    (CARD_80GB, dict(SOLVER, prompts_per_step=683, group_size=6), "max_num_batched_tokens = 4096"),
    # a server holding most of the card leaves too little for TRL and the trainer
    (CARD_80GB, dict(CHALLENGER, solver_len=None, used_gib=60.0), "60.0 GiB held by other processes"),
])
def test_plans_that_do_not_fit_say_why_before_any_work(card, lengths, message):
    with pytest.raises(gm.PlanError) as error:
        gm.plan(Q4B, card, **lengths)
    assert message in str(error.value)
    if "prompts-per-step" not in str(error.value):
        assert "--micro-batch-size" in str(error.value) and "--backend server" in str(error.value)  # the fixes


def test_exactly_4096_completions_per_step_is_allowed():
    gm.plan(Q4B, 139.8, **dict(SOLVER, prompts_per_step=1024, group_size=4, micro_batch_size=8))


def test_shape_of_a_config_without_head_dim_or_kv_heads():
    # Llama-2 style: head_dim = hidden / heads, kv heads = heads, untied embeddings
    shape = gm.shape_of(dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                             vocab_size=100))
    assert (shape.head_dim, shape.kv_heads, shape.tied) == (16, 4, False)


def test_cli_prints_the_plan_or_the_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_4B))
    ok = subprocess.run([sys.executable, str(ROOT / "stages" / "gpu_memory.py"), str(tmp_path), "--card-gib", "79.2"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "Solver engine 0.55" in ok.stdout and "TRL engine 0.25" in ok.stdout
    assert json.loads(ok.stdout.splitlines()[-1])["trl_max_model_len"] == 4352
    bad = subprocess.run([sys.executable, str(ROOT / "stages" / "gpu_memory.py"), str(tmp_path), "--card-gib", "23.6"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "does not fit" in bad.stderr and "Traceback" not in bad.stderr
    serve = subprocess.run([sys.executable, str(ROOT / "stages" / "gpu_memory.py"), str(tmp_path), "--card-gib", "79.2",
                            "--serve-flags", "--max-new-tokens", "4096", "--solver-max-new-tokens", "4096"],
                           capture_output=True, text=True)  # the driver's SOLVER_SERVER=1 share: the in-process one
    assert serve.stdout.split() == ["--gpu-memory-utilization", "0.55", "--max-model-len", "8448"]
