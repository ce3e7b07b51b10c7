"""Train the Solver of iteration k with GRPO on the questions the label stage kept.

Reads: the labeled artifact's `train.parquet` (question, label y, consistency p), the base model,
and the Solver adapter of iteration k-1 (none for k = 1: a fresh LoRA on the base).
Writes: the Solver LoRA adapter of iteration k, `summary.json`, `DONE`; with --hub-repo also
branch iterNN of that Hub model repo (adapter, summary, DONE and a card, one commit).
Inputs are local folders or Hub references: --train hf://datasets/<ns>/<repo>/iterNN-train,
--solver-adapter hf://<ns>/<repo>@iterNN (see stages/hub.py).

Method (DESIGN.md section 1, step 5): for each kept question the Solver samples G completions
(group size, 5 in the paper); reward 1 when the completion's last \\boxed{} is equivalent to the
pseudo-label y, else 0 (the reference gives 0.9 accuracy + 0.1 format; we reward correctness
only). TRL's GRPOTrainer with a PEFT LoRA; KL to the frozen start of this iteration (beta).
A group whose G rewards are all equal carries no gradient; its share is logged each step.

Label-decay mitigations (--mitigation, off by default): adpo scales each advantage by the label's
vote share p (Agent0, arXiv 2511.16043); restrain rewards every answer by its share of the m votes
(the majority's answer 1) and gives every completion of a question with p < kappa the advantage
-penalty (RESTRAIN, arXiv 2510.02172; --restrain-kappa, --restrain-penalty).

Examples:
  python stages/train_solver.py --base-model Qwen/Qwen3-4B-Base --iteration 1 \\
      --train runs/q4b/iter01/labeled --output runs/q4b/iter01/solver
  python stages/train_solver.py --base-model ~/.cache/rzero/micro-0123abcd --iteration 2 \\
      --train runs/demo/iter02/labeled --solver-adapter runs/demo/iter01/solver \\
      --output runs/demo/iter02/solver --steps 20 --prompts-per-step 16 --max-new-tokens 96
  python stages/train_solver.py --base-model ~/.cache/rzero/micro-0123abcd --iteration 2 \\
      --train hf://datasets/me/demo-questions/iter02-train --solver-adapter hf://me/demo-solver@iter01 \\
      --output runs/demo/iter02/solver --hub-repo me/demo-solver
"""

import time
from pathlib import Path

import typer

import artifacts
import equivalence
import grpo
import hub
import rzero

# Recipe defaults for a real model on one GPU, a reason on each line (DESIGN.md section 1).
RECIPE = dict(
    group_size=5,           # G: completions per question (paper: 5)
    steps=15,               # optimizer steps (paper: 15 per iteration)
    prompts_per_step=128,   # questions per step (paper: 512 on 8 GPUs; 128 fits one GPU)
    learning_rate=1e-5,     # LoRA needs ~10x the paper's full fine-tuning lr of 1e-6
    kl_coef=1e-2,           # beta, the paper's KL coefficient
    clip_low=0.2,           # epsilon (paper: 0.2)
    clip_high=0.3,          # epsilon_high (paper: 0.3, the clip-higher trick)
    lora_rank=64,           # r: enough capacity for reasoning changes, ~1% of a 4B model
    lora_alpha=128,         # alpha = 2r, the usual scaling
    max_new_tokens=4096,    # paper's max response length
    micro_batch_size=8,     # completions per forward/backward pass (gradient accumulation fills the step)
)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def correctness(completions: list[str], label: list[str], log_metric=None, **_) -> list[float]:
    """The reward TRL calls with each batch of Solver completions and their questions' pseudo-labels
    y (the dataset's `label` column): 1 for an answer equivalent to y, else 0; the boxed rate logged."""
    log_boxed_rate(completions, log_metric)
    return rzero.solver_rewards(completions, label)


def vote_share(completions: list[str], answers: list[list], consistency: list[float], log_metric=None,
               **_) -> list[float]:
    """--mitigation restrain's reward: each answer's share of its question's m votes, the majority's 1."""
    log_boxed_rate(completions, log_metric)
    return rzero.vote_weights(completions, answers, consistency)


def log_boxed_rate(completions: list[str], log_metric=None) -> None:
    """The share of completions holding a \\boxed{} answer, which both rewards need (see `needed` below)."""
    if log_metric:
        log_metric("boxed_rate", sum(rzero.last_boxed(c) is not None for c in completions) / len(completions))


@app.command()
def main(
    base_model: str = typer.Option(..., help="Base model: local folder, Hub model id, or "
                                   "hf://<ns>/<repo>@<revision>.", rich_help_panel="Inputs"),
    train: str = typer.Option(..., help="Labeled artifact of this iteration (its train.parquet is used): folder or "
                              "hf://datasets/<ns>/<repo>/iterNN-train[@<revision>].", rich_help_panel="Inputs"),
    solver_adapter: str = typer.Option("", help="Solver adapter of iteration k-1 (folder or "
                                       "hf://<ns>/<repo>@iterNN); empty for k = 1 (start from the base).",
                                       rich_help_panel="Inputs"),
    iteration: int = typer.Option(..., min=1, help="Iteration k (1, 2, ...).", rich_help_panel="Inputs"),
    output: Path = typer.Option(..., help="Folder for the Solver adapter of iteration k.", rich_help_panel="Outputs"),
    overwrite: bool = typer.Option(False, help="Redo even if the output is complete.", rich_help_panel="Outputs"),
    group_size: int = typer.Option(RECIPE["group_size"], min=2, help="G: completions per question.",
                                   rich_help_panel="Method"),
    steps: int = typer.Option(RECIPE["steps"], min=1, help="Optimizer steps.", rich_help_panel="Training"),
    prompts_per_step: int = typer.Option(RECIPE["prompts_per_step"], min=1, help="Prompts (kept questions) per "
                                         "optimizer step.", rich_help_panel="Training"),
    learning_rate: float = typer.Option(RECIPE["learning_rate"], help="AdamW learning rate.",
                                        rich_help_panel="Training"),
    kl_coef: float = typer.Option(RECIPE["kl_coef"], help="beta: KL coefficient (0 = no reference model).",
                                  rich_help_panel="Training"),
    lora_rank: int = typer.Option(RECIPE["lora_rank"], min=1, help="LoRA rank r of a new adapter (a continued "
                                  "adapter keeps its own).", rich_help_panel="Training"),
    lora_alpha: int = typer.Option(RECIPE["lora_alpha"], help="LoRA alpha of a new adapter.",
                                   rich_help_panel="Training"),
    micro_batch_size: int = typer.Option(RECIPE["micro_batch_size"], min=1, help="Completions per forward/backward "
                                         "pass.", rich_help_panel="Training"),
    max_new_tokens: int = typer.Option(RECIPE["max_new_tokens"], help="Max tokens per completion.",
                                       rich_help_panel="Sampling"),
    temperature: float = typer.Option(1.0, help="Sampling temperature of the completions.", rich_help_panel="Sampling"),
    seed: int = typer.Option(0, help="Seed of sampling and of the training's data order.", rich_help_panel="Sampling"),
    mitigation: str = typer.Option("none", help="Label-decay mitigation: none (the paper); adpo: advantages x the "
                                   "label's vote share p (Agent0's ADPO, arXiv 2511.16043); restrain: reward = the "
                                   "answer's share of the m votes (majority 1), and advantage -penalty for every "
                                   "completion of a question with p < kappa (RESTRAIN, arXiv 2510.02172).",
                                   rich_help_panel="Method"),
    restrain_kappa: float = typer.Option(0.5, help="restrain: questions whose label has a vote share p below this "
                                         "are penalized, not learned (0.5 = fewer than half of the m votes).",
                                         rich_help_panel="Method"),
    restrain_penalty: float = typer.Option(0.5, help="restrain: the advantage of every completion of such a "
                                           "question, negated (0 = drop them).", rich_help_panel="Method"),
    quantization: str = grpo.QUANTIZATION,
    vllm_mode: str = grpo.VLLM_MODE,
    vllm_server_url: str = grpo.VLLM_SERVER_URL,
    hub_repo: str = typer.Option("", help="Also push the adapter to this Hub model repo (<ns>/<name>, private), "
                                 "branch iterNN; empty = local only. Token: HF_TOKEN or the Hub login.",
                                 rich_help_panel="Hub"),
):
    """GRPO on the kept questions, reward = agreement with the pseudo-label."""
    args = dict(locals())
    artifacts.log(f"train_solver: {args}")
    target = hub.model_target(hub_repo, iteration)  # checks the token before any work
    inputs = {}  # where each input came from (a Hub reference with its commit), for summary.json
    base_model = hub.base(base_model, inputs)
    train = hub.input(train, "--train (labeled questions)", "stages/label_questions.py", inputs)
    solver_adapter = hub.optional_input(solver_adapter, "--solver-adapter",
                                        "stages/train_solver.py of the previous iteration", inputs)
    if iteration > 1 and not solver_adapter:
        artifacts.fail(f"--iteration {iteration} continues the Solver of iteration {iteration - 1}: "
                       "pass --solver-adapter.")
    artifacts.check_lineage(base_model, iteration, {"--train": (str(train), iteration),
                                                    "--solver-adapter": (solver_adapter, iteration - 1)})
    grpo.check_batches(prompts_per_step, group_size, micro_batch_size)
    grpo.check_modes(quantization, vllm_mode, vllm_server_url)
    if mitigation not in rzero.MITIGATIONS:
        artifacts.fail(f"--mitigation {mitigation!r}: use one of {', '.join(rzero.MITIGATIONS)}.")
    import pyarrow.parquet as pq

    rows = pq.read_table(train / "train.parquet").to_pylist()
    if mitigation == "restrain" and rows and "answers" not in rows[0]:
        artifacts.fail(f"--mitigation restrain needs the m answers of each question, which {train}/train.parquet "
                       "lacks (written before they were kept): rerun the label stage with --overwrite.")
    if not rows and not (artifacts.is_complete(output) and not overwrite):
        artifacts.fail(f"{train} kept zero questions: nothing to train on. Generate more questions "
                       "(--num-samples) or widen the band (--delta) in the label stage.")
    partial = grpo.start("train_solver", output, overwrite, target)
    if partial is None:
        return

    from datasets import Dataset

    import generation

    t0 = time.time()
    tokenizer = generation.load_tokenizer(base_model)
    prompts = [rzero.render_prompt(tokenizer, rzero.solver_messages(r["question"])) for r in rows]
    dataset = Dataset.from_list([dict(prompt=p, label=r["label"], consistency=r["consistency"],
                                      **({"answers": r["answers"]} if mitigation == "restrain" else {}))
                                 for p, r in zip(prompts, rows)])

    def mitigated(values: list[float], batch: list[dict]) -> list[float]:  # rows of this process's completions
        return rzero.solver_advantages(values, [r["consistency"] for r in batch], mitigation, restrain_kappa,
                                         restrain_penalty)

    memory = grpo.memory_plan(base_model, solver_adapter, prompt_tokens=grpo.prompt_tokens(tokenizer, prompts),
                              max_new_tokens=max_new_tokens, micro_batch_size=micro_batch_size,
                              prompts_per_step=prompts_per_step, group_size=group_size, lora_rank=lora_rank)
    history = grpo.train_lora(
        base_model=base_model, adapter=solver_adapter, dataset=dataset,
        reward=vote_share if mitigation == "restrain" else correctness,
        tokenizer=tokenizer, output=partial, steps=steps, prompts_per_step=prompts_per_step, group_size=group_size,
        micro_batch_size=micro_batch_size, learning_rate=learning_rate, kl_coef=kl_coef,
        clip=(RECIPE["clip_low"], RECIPE["clip_high"]), lora_rank=lora_rank, lora_alpha=lora_alpha,
        max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
        shown={"frac_reward_zero_std": "zero-variance groups", "boxed_rate": "boxed"},
        needed={"boxed_rate": "no completion holds a \\boxed{} answer, so none can match its label. Use a stronger "
                "base that follows the Solver prompt, or change the prompt's format (rzero.solver_messages)."},
        memory=memory, quantization=quantization, vllm_mode=vllm_mode, vllm_server_url=vllm_server_url,
        advantages=None if mitigation == "none" else mitigated,
    )
    rewards = [h["reward"] for h in history]
    summary = dict(
        stage="train_solver", iteration=iteration, base_identity=artifacts.base_identity(base_model),
        mitigation=mitigation,
        args={k: str(v) for k, v in args.items()}, inputs=inputs, questions=len(rows), steps=steps,
        reward_first=rewards[0] if rewards else None, reward_last=rewards[-1] if rewards else None,
        reward_mean=grpo.mean(history, "reward"),
        zero_variance_share=grpo.mean(history, "frac_reward_zero_std"), boxed_rate=grpo.mean(history, "boxed_rate"),
        history=history, seconds=round(time.time() - t0, 1),
        processes=artifacts.processes(),
        verifier_failures=grpo.summed(equivalence.failures()),  # every rank's: all "not equivalent"
    )
    grpo.publish(partial, output, summary, target)
    artifacts.log(f"train_solver: iteration {iteration} done in {summary['seconds']:.0f} s | {len(rows)} questions | "
                  f"reward {summary['reward_first']:.3f} -> {summary['reward_last']:.3f} | "
                  f"{'' if mitigation == 'none' else f'mitigation {mitigation} | '}"
                  f"zero-variance groups {summary['zero_variance_share']:.0%} | "
                  f"{equivalence.failure_note(summary['verifier_failures'])}{grpo.processes_note()} | {output}")


if __name__ == "__main__":
    app()
