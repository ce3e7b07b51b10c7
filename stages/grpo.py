"""GRPO with a LoRA adapter, shared by the two training stages (train_challenger, train_solver):
TRL's GRPOTrainer on the base with a new or continued PEFT LoRA, one `step i/N | ...` line per
optimizer step, and the adapter saved into the stage's output folder. Heavy imports inside.
"""

import shutil
from pathlib import Path

import artifacts
import generation


def check_batches(prompts_per_step: int, group_size: int, micro_batch_size: int) -> None:
    """Exit with a clear error unless the micro-batches tile one step's completions exactly."""
    if (prompts_per_step * group_size) % micro_batch_size:
        artifacts.fail(f"--micro-batch-size {micro_batch_size} must divide prompts-per-step x group-size "
                       f"= {prompts_per_step * group_size}.")


def train_lora(
    *, base_model: str, adapter: str | None, dataset, reward, tokenizer, output: Path, steps: int,
    prompts_per_step: int, group_size: int, micro_batch_size: int, learning_rate: float, kl_coef: float,
    clip: tuple[float, float], lora_rank: int, lora_alpha: int, max_new_tokens: int, temperature: float,
    seed: int, shown: dict[str, str],
) -> list[dict]:
    """Train for `steps` optimizer steps of prompts_per_step x group_size completions; save the
    adapter in `output`; return the per-step logs. A dataset with fewer than steps x prompts_per_step
    rows is cycled to fill every step. `shown` maps log keys to the names printed in each step line
    after the reward (e.g. {"format_rate": "format"})."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    model = generation.load_model(base_model, adapter, trainable=True)
    if not adapter:  # iteration 1: a fresh LoRA on every linear layer
        model = get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=lora_alpha, target_modules="all-linear",
                                                 lora_dropout=0.0, task_type="CAUSAL_LM"))
    if len(dataset) < steps * prompts_per_step:  # TRL draws whole batches of distinct rows: cycle the rows
        dataset = dataset.select([i % len(dataset) for i in range(steps * prompts_per_step)])  # to fill every step
    cuda = torch.cuda.is_available()
    config = GRPOConfig(
        output_dir=str(output / "trainer"), max_steps=steps, learning_rate=learning_rate, beta=kl_coef,
        epsilon=clip[0], epsilon_high=clip[1], num_generations=group_size,
        per_device_train_batch_size=micro_batch_size,
        gradient_accumulation_steps=prompts_per_step * group_size // micro_batch_size,
        max_completion_length=max_new_tokens, temperature=temperature, top_p=1.0, seed=seed, data_seed=seed,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=not cuda, bf16=cuda,
        gradient_checkpointing=cuda, use_vllm=cuda and generation._vllm_usable(), vllm_mode="colocate",
        log_level="warning",
    )
    history: list[dict] = []

    class StepLine(TrainerCallback):
        def on_log(self, _args, state, _control, logs=None, **_):
            if logs and "reward" in logs:
                history.append(dict(step=state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}))
                extra = " | ".join(f"{name}: {logs.get(key, float('nan')):.3f}" for key, name in shown.items())
                artifacts.log(f"step {state.global_step}/{steps} | reward: {logs['reward']:.3f} | {extra}")

    class QuietProgress(ProgressCallback):  # keep the bar, drop its dump of every log dict
        def on_log(self, *_args, **_kwargs):
            pass

    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[StepLine()])
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(QuietProgress())
    trainer.train()
    if len(history) < steps:  # TRL stops early without an error: never save that as a finished adapter
        artifacts.fail(f"GRPO ran {len(history)} of {steps} steps: the dataset ({len(dataset)} prompts) gives too few "
                       f"batches of {prompts_per_step} prompts x {group_size} completions. Lower --prompts-per-step.")
    trainer.model.save_pretrained(output)
    shutil.rmtree(output / "trainer", ignore_errors=True)
    return history


def mean(history: list[dict], key: str) -> float | None:
    values = [h[key] for h in history if key in h]
    return sum(values) / len(values) if values else None
