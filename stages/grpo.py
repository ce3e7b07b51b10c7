"""GRPO with a LoRA adapter, shared by the two training stages (train_challenger, train_solver):
TRL's GRPOTrainer on the base with a new or continued PEFT LoRA, one `step i/N | ...` line per
optimizer step, and the adapter saved into the stage's output folder. Heavy imports inside.

On a GPU, TRL's colocated vLLM engine gets its share of the card, its context length and sleep
mode from the stage's memory plan (stages/gpu_memory.py). It fails loudly, never saving the
adapter, when the first step's rewards carry no signal (a needed rate at 0, or every one of at
least MIN_GROUPS groups without variance), when fewer optimizer steps ran than asked, or when the
adapter did not move although the rewards differed within groups. Only the
trained adapter is saved, not TRL's frozen `ref` copy (PEFT saves every adapter unless told).

Under `accelerate launch` (stages/accelerate/: DDP, DeepSpeed ZeRO-3, FSDP2) every rank trains on
its share of each step's prompts x group size completions (the step's size stays the same), only
the main process writes the output folder, logs and pushes (`start`, `publish`), and the adapter
is gathered from every rank before it is saved. With --quantization 4bit (QLoRA) the trainer
generates with transformers: TRL cannot sync a 4-bit base into vLLM (trl#4973).
"""

import functools
import json
import shutil
from pathlib import Path

import typer

import artifacts
import generation

# The flags both training stages take for how they train beyond one plain GPU.
QUANTIZATION = typer.Option("none", help="none, or 4bit: QLoRA (NF4, double quantization, bf16 compute) for bases "
                            "too large for a bf16 copy; the adapter loads on the bf16 base. The trainer then "
                            "generates with transformers (trl#4973).", rich_help_panel="Training")
VLLM_MODE = typer.Option("colocate", help="TRL's vLLM on a GPU: colocate (an engine in each training process) or "
                         "server (`trl vllm-serve` on GPUs of its own, at --vllm-server-url).",
                         rich_help_panel="Sampling")
VLLM_SERVER_URL = typer.Option("", help="Base URL of `trl vllm-serve` for --vllm-mode server "
                               "(e.g. http://10.0.0.5:8000).", rich_help_panel="Sampling")
MIN_GROUPS = 8  # prompts per step from which "every group without variance" is judged after step 1


def check_batches(prompts_per_step: int, group_size: int, micro_batch_size: int) -> None:
    """Exit with a clear error unless the micro-batches of every process tile one step's completions."""
    n = artifacts.processes()
    if (prompts_per_step * group_size) % (micro_batch_size * n):
        on = f" x {n} processes" if n > 1 else ""
        artifacts.fail(f"--micro-batch-size {micro_batch_size}{on} must divide prompts-per-step x group-size "
                       f"= {prompts_per_step * group_size}.")


def check_modes(quantization: str, vllm_mode: str, vllm_server_url: str) -> None:
    """Exit with a clear error on an unknown or impossible --quantization / --vllm-mode choice."""
    if quantization not in ("none", "4bit"):
        artifacts.fail(f"--quantization {quantization!r}: use none or 4bit.")
    if vllm_mode not in ("colocate", "server"):
        artifacts.fail(f"--vllm-mode {vllm_mode!r}: use colocate or server.")
    if vllm_mode == "server" and not vllm_server_url:
        artifacts.fail("--vllm-mode server needs --vllm-server-url, the base URL of `trl vllm-serve` "
                       "(e.g. http://127.0.0.1:8000).")
    if vllm_mode == "server" and quantization == "4bit":
        artifacts.fail("--quantization 4bit cannot use --vllm-mode server: TRL cannot send a 4-bit base's weights "
                       "to vLLM (trl#4973), so the 4-bit trainer generates with transformers. Drop one of the two.")


def processes_note() -> str:
    """The closing line's '| N processes' under `accelerate launch` (nothing alone)."""
    n = artifacts.processes()
    return f" | {n} processes" if n > 1 else ""


def _distributed() -> None:
    """Start the process group (gloo on a CPU, nccl on GPUs) before the first collective; a no-op alone."""
    import torch
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available())


def broadcast(value):
    """The main process's `value` on every rank (itself when alone)."""
    if artifacts.processes() == 1:
        return value
    from accelerate.utils import broadcast_object_list

    _distributed()
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def gathered(items: list) -> list:
    """`items` of every rank, concatenated in rank order (itself when alone)."""
    if artifacts.processes() == 1:
        return list(items)
    from accelerate.utils import gather_object

    _distributed()
    return gather_object(list(items))


def barrier() -> None:
    """Every rank waits here for the others (nothing alone)."""
    if artifacts.processes() > 1:
        from accelerate import PartialState

        _distributed()
        PartialState().wait_for_everyone()


def whole_batch(completions: list[str]) -> tuple[list[str], int]:
    """The reward batch of every rank together and where this rank's `completions` start in it: a
    reward over the whole batch (the Challenger's repetition penalty) is computed on it, and each
    rank keeps its own slice, so the values equal one process's on the same batch."""
    shares = gathered([list(completions)])  # one list per rank, in rank order
    return [c for share in shares for c in share], sum(len(share) for share in shares[: artifacts.rank()])


def summed(counts: dict[str, int]) -> dict[str, int]:
    """Counts (equivalence.failures()) added over the ranks: the whole stage's."""
    every = gathered([counts])
    return {key: sum(c[key] for c in every) for key in counts}


def start(stage: str, output: Path, overwrite: bool, target: dict | None) -> Path | None:
    """hub.start on the main process only (the skip decision, the `.partial` folder, a missing push);
    every other rank gets the same answer and never touches the folder itself."""
    import hub

    return broadcast(hub.start(stage, output, overwrite, target) if artifacts.rank() == 0 else None)


def publish(partial: Path, output: Path, summary: dict, target: dict | None) -> None:
    """artifacts.finish and hub.push on the main process only; the other ranks wait for it."""
    import hub

    if artifacts.rank() == 0:
        artifacts.finish(partial, output, summary)
        hub.push(output, target)
    barrier()


def prompt_tokens(tokenizer, prompts: list[str]) -> int:
    """Tokens in the longest of `prompts` (rendered text, no special tokens added)."""
    return max(len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False).input_ids)


def memory_plan(base_model: str, adapter: str | None, *, prompt_tokens: int, max_new_tokens: int,
                micro_batch_size: int, prompts_per_step: int, group_size: int, lora_rank: int,
                solver_len: int | None = None):
    """The stage's one-GPU memory plan (stages/gpu_memory.py), logged; None where vLLM does not run
    (no GPU or no vLLM: nothing shares a card). One clear error here, before any model is loaded,
    when it does not fit. A continued adapter plans with its own rank."""
    if not generation._vllm_usable():
        return None
    import gpu_memory

    rank = json.loads((Path(adapter) / "adapter_config.json").read_text())["r"] if adapter else lora_rank
    try:
        plan = gpu_memory.for_this_card(base_model, prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens,
                                        micro_batch_size=micro_batch_size, prompts_per_step=prompts_per_step,
                                        group_size=group_size, lora_rank=rank, solver_len=solver_len)
    except gpu_memory.PlanError as error:
        artifacts.fail(str(error))
    artifacts.log(plan.line())
    return plan


def train_lora(
    *, base_model: str, adapter: str | None, dataset, reward, tokenizer, output: Path, steps: int,
    prompts_per_step: int, group_size: int, micro_batch_size: int, learning_rate: float, kl_coef: float,
    clip: tuple[float, float], lora_rank: int, lora_alpha: int, max_new_tokens: int, temperature: float,
    seed: int, shown: dict[str, str], needed: dict[str, str] | None = None, memory=None,
    quantization: str = "none", vllm_mode: str = "colocate", vllm_server_url: str = "", advantages=None,
) -> list[dict]:
    """Train for `steps` optimizer steps of prompts_per_step x group_size completions; save the
    adapter in `output`; return the per-step logs. A dataset with fewer than steps x prompts_per_step
    rows is cycled to fill every step. `shown` maps log keys to the names printed in each step line
    after the reward (e.g. {"format_rate": "format"}). `needed` maps a logged rate to the fix to print
    when it is 0 after the first step (no signal: stop, rather than spend the whole budget).
    `memory`: the stage's gpu_memory.Plan (TRL's engine share, context length, sleep mode), or None.
    `quantization` "4bit": a QLoRA base (generation.load_model), generating with transformers.
    `vllm_mode`: TRL's "colocate" engine, or "server": `trl vllm-serve` at `vllm_server_url`.
    `advantages(values, rows)`: new advantages from TRL's group-normalized ones and the dataset rows of
    this process's completions (a list each, in order), or None to keep TRL's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    model = generation.load_model(base_model, adapter, trainable=True, quantization=quantization)
    if not adapter:  # iteration 1: a fresh LoRA on every linear layer
        model = get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=lora_alpha, target_modules="all-linear",
                                                 lora_dropout=0.0, task_type="CAUSAL_LM"))
    if len(dataset) < steps * prompts_per_step:  # TRL draws whole batches of distinct rows: cycle the rows
        dataset = dataset.select([i % len(dataset) for i in range(steps * prompts_per_step)])  # to fill every step
    cuda = torch.cuda.is_available()
    use_vllm = cuda and (vllm_mode == "server" or generation._vllm_usable())
    if use_vllm and quantization == "4bit":
        artifacts.log("the 4-bit trainer generates with transformers, not vLLM: TRL cannot load a 4-bit base's "
                      "weights into its engine (trl#4973); question generation and labeling still use vLLM")
        use_vllm = False
    server = dict(vllm_server_base_url=vllm_server_url) if use_vllm and vllm_mode == "server" else {}
    config = GRPOConfig(
        output_dir=str(output / "trainer"), max_steps=steps, learning_rate=learning_rate, beta=kl_coef,
        epsilon=clip[0], epsilon_high=clip[1], num_generations=group_size,
        per_device_train_batch_size=micro_batch_size,
        gradient_accumulation_steps=prompts_per_step * group_size // (micro_batch_size * artifacts.processes()),
        max_completion_length=max_new_tokens, temperature=temperature, top_p=1.0, seed=seed, data_seed=seed,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=not cuda, bf16=cuda,
        gradient_checkpointing=cuda, use_vllm=use_vllm, vllm_mode=vllm_mode, log_level="warning",
        **(vllm_memory(memory) if vllm_mode == "colocate" else {}), **server,
    )
    history: list[dict] = []
    no_signal: list[str] = []

    class StepLine(TrainerCallback):
        def on_log(self, _args, state, control, logs=None, **_):
            if logs and "reward" in logs:
                numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
                history.append(dict(step=state.global_step, **numbers))
                extra = " | ".join(f"{name}: {logs.get(key, float('nan')):.3f}" for key, name in shown.items())
                artifacts.log(f"step {state.global_step}/{steps} | reward: {logs['reward']:.3f} | {extra}")
                if len(history) == 1:
                    no_signal.extend(signal_problems(history[0], needed or {}, prompts_per_step, group_size))
                    control.should_training_stop = bool(no_signal)

    class QuietProgress(ProgressCallback):  # keep the bar, drop its dump of every log dict
        def on_log(self, *_args, **_kwargs):
            pass

    scored = [0]  # completions this rank scored: every rank's together must be the steps' prompts x group size

    @functools.wraps(reward)  # TRL names the reward's log columns after it
    def counted(completions, **kwargs):
        scored[0] += len(completions)
        return reward(completions, **kwargs)

    trainer = (reweighted(advantages) if advantages else GRPOTrainer)(
        model=model, reward_funcs=[counted], args=config, train_dataset=dataset, processing_class=tokenizer,
        callbacks=[StepLine()])
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(QuietProgress())
    start = fingerprint(trainer.model.state_dict())  # before train(): every rank holds whole tensors here
    trainer.train()
    state = trainer.accelerator.get_state_dict(trainer.model)  # every rank: ZeRO-3 / FSDP shards gathered
    moved = broadcast(fingerprint(state) != start if artifacts.rank() == 0 else None)
    if no_signal:
        artifacts.fail(f"the rewards carry no signal after step 1/{steps}: {' '.join(no_signal)} Stopped instead of "
                       f"spending the other {steps - 1} steps.")
    if len(history) != steps or trainer.state.global_step != steps:  # TRL stops early without an error
        artifacts.fail(f"GRPO ran {trainer.state.global_step} of {steps} optimizer steps ({len(history)} logged): the "
                       f"dataset ({len(dataset)} prompts) gives too few batches of {prompts_per_step} prompts x "
                       f"{group_size} completions. Lower --prompts-per-step.")
    total, expected = sum(gathered(scored)), steps * prompts_per_step * group_size
    artifacts.log(f"GRPO: {total} completions scored by {artifacts.processes()} process(es) in {steps} steps "
                  f"({prompts_per_step} prompts x {group_size} completions per step)")
    if total != expected:
        artifacts.fail(f"GRPO scored {total} completions in {steps} steps, not {expected} ({prompts_per_step} "
                       f"prompts x {group_size} completions per step): the batch arithmetic across processes is wrong.")
    if not moved:  # B still at its zero init (or a continued adapter unchanged)
        flat = all(h.get("frac_reward_zero_std", 0.0) >= 1.0 for h in history)
        if not flat:  # rewards differed, so gradients were nonzero: they never reached the adapter
            artifacts.fail(f"the LoRA adapter did not move in {steps} optimizer steps although rewards differed within "
                           "groups: the optimizer is not updating it (learning rate 0, or frozen LoRA parameters).")
        # every group flat in every step: zero advantages. From MIN_GROUPS groups up, step 1 already stopped on it;
        # with fewer it can be chance (a tiny plumbing run), so it is said loudly, not fatal
        artifacts.log(f"warning: the LoRA adapter did not move: all {prompts_per_step} groups had equal rewards in "
                      f"each of the {steps} steps. At this size that can be chance; at real sizes it means no signal.")
    if artifacts.rank() == 0:  # not TRL's frozen `ref` copy
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(output, state_dict=state,
                                                                        selected_adapters=["default"])
        shutil.rmtree(output / "trainer", ignore_errors=True)
    barrier()  # the adapter is on disk before any rank goes on
    return history


def reweighted(advantages):
    """GRPOTrainer whose advantages pass through `advantages(values, rows)` after TRL computed them
    (group-normalized rewards), before the loss uses them: where a label-decay mitigation acts."""
    import torch
    from trl import GRPOTrainer

    class Reweighted(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            values = out["advantages"]  # this process's completions, in the order of `inputs`
            out["advantages"] = torch.tensor(advantages(values.tolist(), inputs), dtype=values.dtype,
                                             device=values.device)
            return out

    return Reweighted


def vllm_memory(memory) -> dict:
    """GRPOConfig fields for TRL's colocated engine from a gpu_memory.Plan (nothing without one)."""
    if memory is None:
        return {}
    return dict(vllm_gpu_memory_utilization=memory.trl_utilization, vllm_max_model_length=memory.trl_max_model_len,
                vllm_enable_sleep_mode=memory.trl_sleep)


def signal_problems(first: dict, needed: dict[str, str], prompts_per_step: int, group_size: int) -> list[str]:
    """Why the first step's rewards cannot teach anything, one sentence each (none: fine). A rate in
    `needed` at 0 is its fix; every group without variance (TRL's frac_reward_zero_std = 1) means
    zero advantages, judged only from at least MIN_GROUPS groups (fewer can agree by chance)."""
    problems = [f"{key} is 0: {fix}" for key, fix in needed.items() if first.get(key, 1.0) == 0]
    if first.get("frac_reward_zero_std", 0.0) >= 1.0 and prompts_per_step >= MIN_GROUPS:
        problems.append(f"all {prompts_per_step} groups of {group_size} completions got equal rewards "
                        f"(reward {first.get('reward', float('nan')):.3f}), so every advantage is 0. Use a stronger "
                        "base or fix the prompt's format so that completions in a group differ in reward.")
    return problems


def fingerprint(state: dict) -> list[tuple[float, float]]:
    """(sum, sum of squares) of each tensor of the trained adapter ("default") in a state dict:
    equal before and after means nothing moved."""
    import torch

    with torch.no_grad():
        return [(t.double().sum().item(), t.double().square().sum().item())
                for name, t in sorted(state.items()) if "lora_" in name and ".default" in name]


def mean(history: list[dict], key: str) -> float | None:
    values = [h[key] for h in history if key in h]
    return sum(values) / len(values) if values else None
