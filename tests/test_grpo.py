"""grpo.train_lora on the quick micro-world base with stand-in rewards: the adapter it saves (only the
trained one, never TRL's `ref` copy; nonzero lora_B; loads on the base), the steps it logs, and the
loud stops when nothing can be learned (no variance, a needed rate at 0, an adapter that never moved)."""

import json

import pytest

import grpo

TINY = dict(adapter=None, steps=2, prompts_per_step=2, group_size=4, micro_batch_size=8, learning_rate=1e-3,
            kl_coef=0.01, clip=(0.2, 0.3), lora_rank=4, lora_alpha=8, max_new_tokens=12, temperature=1.0, seed=0,
            shown={})


def train(quick_base, output, reward, columns=None, **overrides):
    from datasets import Dataset

    import generation
    import rzero

    tokenizer = generation.load_tokenizer(str(quick_base))
    prompt = rzero.render_prompt(tokenizer, rzero.solver_messages("What is 1 + 2?"))
    args = dict(TINY, **overrides)
    dataset = Dataset.from_list([dict(prompt=prompt, **(columns or {}))])
    return grpo.train_lora(base_model=str(quick_base), dataset=dataset, reward=reward, tokenizer=tokenizer,
                           output=output, **args)


def by_length(completions, **_):  # differs within almost every group: a signal to learn from
    return [float(len(c) % 3) for c in completions]


def constant(completions, **_):  # no completion is better than another: every advantage is 0
    return [1.0] * len(completions)


def test_saved_adapter_is_the_trained_one_only_moved_and_loads(quick_base, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    history = train(quick_base, tmp_path, by_length)
    assert len(history) == TINY["steps"] and [h["step"] for h in history] == [1, 2]  # one log per optimizer step
    weights = load_file(str(tmp_path / "adapter_model.safetensors"))
    # kl_coef > 0 makes TRL add a frozen `ref` adapter; only `default` is saved (half the size)
    assert not [k for k in weights if ".ref." in k or k.startswith("ref")] and not (tmp_path / "ref").exists()
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: nonzero means it trained
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == 4
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(quick_base), tmp_path)
    assert list(model.peft_config) == ["default"]
    loaded = {k for k, _ in model.named_parameters() if "lora_" in k}
    assert len(loaded) == len(weights)


def test_an_adapter_that_never_moves_although_rewards_differ_is_an_error(quick_base, tmp_path, capsys):
    # rewards differ within groups, so the gradients are nonzero, but a learning rate of 0 never applies them
    with pytest.raises(SystemExit) as exit_:
        train(quick_base, tmp_path, by_length, learning_rate=0.0)
    assert exit_.value.code == 2
    assert "did not move in 2 optimizer steps although rewards differed" in capsys.readouterr().err
    assert not (tmp_path / "adapter_model.safetensors").exists()


def test_the_advantage_hook_gets_every_completion_with_its_row_and_its_answer_is_what_trains(quick_base, tmp_path):
    seen = []

    def zeroed(values, rows):  # what a mitigation sees, and an answer that leaves nothing to learn
        seen.append((list(values), [r["consistency"] for r in rows]))
        return [0.0] * len(values)

    # rewards differ within groups, so TRL's advantages do too; the hook zeroes them, so nothing may move
    with pytest.raises(SystemExit) as exit_:
        train(quick_base, tmp_path / "zeroed", by_length, columns=dict(consistency=0.3), advantages=zeroed)
    assert exit_.value.code == 2
    completions = TINY["prompts_per_step"] * TINY["group_size"]
    assert len(seen) == TINY["steps"] and all(len(v) == len(c) == completions for v, c in seen)
    assert all(c == [0.3] * completions for _, c in seen) and any(any(v) for v, _ in seen)
    # the same run with the hook passing TRL's advantages through trains
    history = train(quick_base, tmp_path / "kept", by_length, columns=dict(consistency=0.3),
                    advantages=lambda values, rows: values)
    assert len(history) == TINY["steps"] and (tmp_path / "kept" / "adapter_model.safetensors").is_file()


def test_flat_rewards_in_a_run_too_small_to_judge_are_a_loud_warning(quick_base, tmp_path, capsys):
    from safetensors.torch import load_file

    # two groups per step (fewer than grpo.MIN_GROUPS): all-equal rewards can be chance, so it warns and saves
    history = train(quick_base, tmp_path, constant)
    assert len(history) == 2 and "warning: the LoRA adapter did not move" in capsys.readouterr().err
    weights = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert all(v.abs().sum() == 0 for k, v in weights.items() if "lora_B" in k)  # still the zero init


def test_no_variance_in_any_group_stops_after_the_first_step(quick_base, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train(quick_base, tmp_path, constant, steps=3, prompts_per_step=grpo.MIN_GROUPS, group_size=2,
              micro_batch_size=16)
    err = capsys.readouterr().err
    assert "step 1/3" in err and "step 2/3" not in err  # stopped instead of spending the budget
    assert f"all {grpo.MIN_GROUPS} groups of 2 completions got equal rewards" in err and "stronger base" in err
    assert not (tmp_path / "adapter_model.safetensors").exists()


def test_a_needed_rate_at_zero_stops_after_the_first_step_with_its_fix(quick_base, tmp_path, capsys):
    def no_format(completions, log_metric=None, **_):
        log_metric("format_rate", 0.0)
        return by_length(completions)

    with pytest.raises(SystemExit):
        train(quick_base, tmp_path, no_format, steps=3, needed={"format_rate": "use a stronger base."})
    err = capsys.readouterr().err
    assert "no signal after step 1/3" in err and "format_rate is 0: use a stronger base." in err
    assert "step 2/3" not in err


@pytest.mark.parametrize("first, needed, prompts, expected", [
    (dict(reward=0.5, frac_reward_zero_std=0.5, format_rate=0.3), {"format_rate": "f"}, 64, 0),  # signal: fine
    (dict(reward=0.0, frac_reward_zero_std=1.0), {}, 64, 1),  # every group flat
    (dict(reward=0.0, frac_reward_zero_std=1.0), {}, grpo.MIN_GROUPS - 1, 0),  # too few groups to judge
    (dict(reward=0.0, frac_reward_zero_std=1.0, format_rate=0.0), {"format_rate": "f"}, 64, 2),  # both reasons
    (dict(reward=0.2, frac_reward_zero_std=0.9), {"format_rate": "f"}, 64, 0),  # rate not logged: not judged
])
def test_signal_problems(first, needed, prompts, expected):
    assert len(grpo.signal_problems(first, needed, prompts, 4)) == expected


def test_the_memory_plan_reaches_trls_config():
    from trl import GRPOConfig

    import gpu_memory

    plan = gpu_memory.Plan(card_gib=79.2, trl_utilization=0.25, trl_max_model_len=4352, trl_sleep=True,
                           solver_utilization=0.55, solver_max_model_len=8448, gib={})
    fields = grpo.vllm_memory(plan)
    assert fields == dict(vllm_gpu_memory_utilization=0.25, vllm_max_model_length=4352, vllm_enable_sleep_mode=True)
    assert grpo.vllm_memory(None) == {}  # CPU: TRL's defaults (no vLLM engine at all)
    config = GRPOConfig(output_dir="/tmp/unused", use_cpu=True, report_to="none", **fields)
    assert (config.vllm_gpu_memory_utilization, config.vllm_max_model_length, config.vllm_enable_sleep_mode) == (
        0.25, 4352, True)
