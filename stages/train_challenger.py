"""Train the Challenger of iteration k with GRPO to write questions at the edge of the Solver's ability.

Reads: the base model, the Challenger adapter of iteration k-1 (none for k = 1), and the frozen
Solver of iteration k-1 (the Solver adapter, or the plain base for k = 1).
Writes: the Challenger LoRA adapter of iteration k, `summary.json`, `DONE`; with --hub-repo also
branch iterNN of that Hub model repo (adapter, summary, DONE and a card, one commit).
Inputs are local folders or Hub references: hf://<ns>/<repo>@<revision> (see stages/hub.py).

Method (DESIGN.md section 1, step 1). Every step samples completions of the one fixed Challenger
prompt (temperature 1.0; diversity comes from sampling). For each completion:
  - no non-empty <question>...</question>: reward 0 (the reference uses -1 before the penalty);
  - else the frozen Solver answers the question m times; the majority of the last \\boxed{}
    answers is the pseudo-label and p = (largest group of equivalent answers) / m;
  - r_unc = 1 - 2|p - 1/2| (the paper's form; the reference code uses min(p, 1 - p));
  - r_rep = lambda |C(i)| / B over the B questions of the same reward batch, C(i) the cluster of
    q_i in average-linkage clustering of d = 1 - BLEU cut at tau;
  - r = max(0, r_unc - r_rep).
Logged each step: reward mean, format rate, mean consistency, mean penalty, share of zero rewards.

Examples:
  python stages/train_challenger.py --base-model Qwen/Qwen3-4B-Base --iteration 1 \\
      --output runs/q4b/iter01/challenger
  python stages/train_challenger.py --base-model ~/.cache/rzero/micro-0123abcd --iteration 2 \\
      --challenger-adapter runs/demo/iter01/challenger --solver-adapter runs/demo/iter01/solver \\
      --output runs/demo/iter02/challenger --steps 5 --prompts-per-step 16 --m 8 --max-new-tokens 48
  python stages/train_challenger.py --base-model ~/.cache/rzero/micro-0123abcd --iteration 2 \\
      --challenger-adapter hf://me/demo-challenger@iter01 --solver-adapter hf://me/demo-solver@iter01 \\
      --output runs/demo/iter02/challenger --hub-repo me/demo-challenger
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
    group_size=4,           # completions per prompt (paper: 4)
    steps=5,                # optimizer steps per iteration (paper: 5)
    prompts_per_step=64,    # prompts per step; x group size = B questions per reward batch (paper: 512 x 4 on 8 GPUs)
    learning_rate=1e-5,     # LoRA needs ~10x the paper's full fine-tuning lr of 1e-6
    kl_coef=1e-2,           # beta, the paper's KL coefficient
    clip_low=0.2,           # epsilon (paper: 0.2)
    clip_high=0.3,          # epsilon_high (paper: 0.3)
    lora_rank=64,           # r for a new adapter
    lora_alpha=128,         # alpha = 2r
    max_new_tokens=4096,    # paper's max response length
    solver_max_new_tokens=4096,  # the Solver's answers inside the reward
    micro_batch_size=8,     # completions per forward/backward pass
)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def reward_function(solve, m: int, tau: float, penalty_weight: float):
    """The reward TRL calls with each batch of Challenger completions: max(0, r_unc - r_rep) per
    completion (rzero.challenger_rewards), its batch metrics logged beside the reward. Under
    `accelerate launch` each rank scores its own completions, with r_rep over every rank's."""

    def uncertainty_minus_repetition(completions: list[str], log_metric=None, **_) -> list[float]:
        batch, offset = grpo.whole_batch(completions)  # B: the step's questions on every rank
        rewards, metrics = rzero.challenger_rewards(completions, solve, m, tau=tau, penalty_weight=penalty_weight,
                                                    batch=batch, offset=offset)
        if log_metric:
            for key, value in metrics.items():
                log_metric(key, value)
        return rewards

    return uncertainty_minus_repetition


@app.command()
def main(
    base_model: str = typer.Option(..., help="Base model: local folder, Hub model id, or "
                                   "hf://<ns>/<repo>@<revision>.", rich_help_panel="Inputs"),
    challenger_adapter: str = typer.Option("", help="Challenger adapter of iteration k-1 (folder or "
                                           "hf://<ns>/<repo>@iterNN); empty for k = 1.", rich_help_panel="Inputs"),
    solver_adapter: str = typer.Option("", help="Frozen Solver of iteration k-1 (folder or hf://<ns>/<repo>@iterNN); "
                                       "empty for k = 1 (the base answers).", rich_help_panel="Inputs"),
    iteration: int = typer.Option(..., min=1, help="Iteration k (1, 2, ...).", rich_help_panel="Inputs"),
    output: Path = typer.Option(..., help="Folder for the Challenger adapter of iteration k.",
                                rich_help_panel="Outputs"),
    overwrite: bool = typer.Option(False, help="Redo even if the output is complete.", rich_help_panel="Outputs"),
    m: int = typer.Option(10, min=2, help="m: Solver answers per question for the majority vote.",
                          rich_help_panel="Method"),
    tau: float = typer.Option(0.5, help="tau: clustering cut on d = 1 - BLEU for the repetition penalty.",
                              rich_help_panel="Method"),
    penalty_weight: float = typer.Option(1.0, help="lambda: weight of the repetition penalty (0 = off).",
                                         rich_help_panel="Method"),
    group_size: int = typer.Option(RECIPE["group_size"], min=2, help="Completions per prompt (GRPO group).",
                                   rich_help_panel="Method"),
    steps: int = typer.Option(RECIPE["steps"], min=1, help="Optimizer steps.", rich_help_panel="Training"),
    prompts_per_step: int = typer.Option(RECIPE["prompts_per_step"], min=1, help="Prompts per optimizer step.",
                                         rich_help_panel="Training"),
    learning_rate: float = typer.Option(RECIPE["learning_rate"], help="AdamW learning rate.",
                                        rich_help_panel="Training"),
    kl_coef: float = typer.Option(RECIPE["kl_coef"], help="beta: KL coefficient (0 = no reference model).",
                                  rich_help_panel="Training"),
    lora_rank: int = typer.Option(RECIPE["lora_rank"], min=1, help="LoRA rank of a new adapter.",
                                  rich_help_panel="Training"),
    lora_alpha: int = typer.Option(RECIPE["lora_alpha"], help="LoRA alpha of a new adapter.",
                                   rich_help_panel="Training"),
    micro_batch_size: int = typer.Option(RECIPE["micro_batch_size"], min=1, help="Completions per forward/backward "
                                         "pass.", rich_help_panel="Training"),
    max_new_tokens: int = typer.Option(RECIPE["max_new_tokens"], help="Max tokens per Challenger completion.",
                                       rich_help_panel="Sampling"),
    solver_max_new_tokens: int = typer.Option(RECIPE["solver_max_new_tokens"], help="Max tokens per Solver answer.",
                                              rich_help_panel="Sampling"),
    backend: str = typer.Option("auto", help="Where the frozen Solver samples its m answers: auto (vLLM on a GPU if "
                                "installed, else transformers), hf, vllm, server.", rich_help_panel="Sampling"),
    server_url: str = typer.Option("", help="OpenAI-compatible URL of the Solver server for --backend server "
                                   "(e.g. http://127.0.0.1:8011/v1).", rich_help_panel="Sampling"),
    solver_backend: str = typer.Option("", hidden=True, help="Renamed --backend."),
    solver_url: str = typer.Option("", hidden=True, help="Renamed --server-url."),
    seed: int = typer.Option(0, help="Seed of sampling and of the training's data order.", rich_help_panel="Sampling"),
    quantization: str = grpo.QUANTIZATION,
    vllm_mode: str = grpo.VLLM_MODE,
    vllm_server_url: str = grpo.VLLM_SERVER_URL,
    hub_repo: str = typer.Option("", help="Also push the adapter to this Hub model repo (<ns>/<name>, private), "
                                 "branch iterNN; empty = local only. Token: HF_TOKEN or the Hub login.",
                                 rich_help_panel="Hub"),
):
    """GRPO on the Challenger prompt, reward = max(0, r_unc - r_rep)."""
    backend = artifacts.renamed(solver_backend, "--solver-backend", backend, "--backend")
    server_url = artifacts.renamed(solver_url, "--solver-url", server_url, "--server-url")
    args = dict(locals())
    artifacts.log(f"train_challenger: {args}")
    target = hub.model_target(hub_repo, iteration)  # checks the token before any work
    inputs = {}  # where each input came from (a Hub reference with its commit), for summary.json
    base_model = hub.base(base_model, inputs)
    challenger_adapter = hub.optional_input(challenger_adapter, "--challenger-adapter",
                                            "the previous iteration's stages", inputs)
    solver_adapter = hub.optional_input(solver_adapter, "--solver-adapter", "the previous iteration's stages", inputs)
    if iteration > 1 and not (challenger_adapter and solver_adapter):
        artifacts.fail(f"--iteration {iteration} continues iteration {iteration - 1}: pass its --challenger-adapter "
                       "and --solver-adapter.")
    artifacts.check_lineage(base_model, iteration, {"--challenger-adapter": (challenger_adapter, iteration - 1),
                                                    "--solver-adapter": (solver_adapter, iteration - 1)})
    grpo.check_batches(prompts_per_step, group_size, micro_batch_size)
    grpo.check_modes(quantization, vllm_mode, vllm_server_url)
    partial = grpo.start("train_challenger", output, overwrite, target)
    if partial is None:
        return

    from datasets import Dataset

    import generation

    t0 = time.time()
    tokenizer = generation.load_tokenizer(base_model)
    prompt = rzero.render_prompt(tokenizer, rzero.challenger_messages())
    # One card for the Solver's engine, TRL's and the trainer. The Solver reads a question of up to
    # max_new_tokens (it is cut from a Challenger completion) and answers it in solver_max_new_tokens.
    in_process = generation.resolve_backend(backend) == "vllm"
    if in_process and artifacts.processes() > 1:
        artifacts.fail(f"{artifacts.processes()} training processes would each start their own vLLM Solver: serve "
                       "it once and share it (--backend server --server-url ..., the driver's SOLVER_SERVER=1).")
    solver_len = grpo.prompt_tokens(tokenizer, [rzero.render_prompt(tokenizer, rzero.solver_messages(""))]) \
        + max_new_tokens + solver_max_new_tokens
    memory = grpo.memory_plan(base_model, challenger_adapter, prompt_tokens=grpo.prompt_tokens(tokenizer, [prompt]),
                              max_new_tokens=max_new_tokens, micro_batch_size=micro_batch_size,
                              prompts_per_step=prompts_per_step, group_size=group_size, lora_rank=lora_rank,
                              solver_len=solver_len if in_process else None)
    solver = generation.make_sampler(  # before the trainer: its engine then runs in a child process
        base_model, solver_adapter, backend=backend, server_url=server_url, seed=seed,
        sampling=generation.Sampling(temperature=1.0, top_p=1.0, top_k=40, max_new_tokens=solver_max_new_tokens),
        gpu_memory_utilization=memory and memory.solver_utilization,
        max_model_len=memory and memory.solver_max_model_len,
    )
    dataset = Dataset.from_list([dict(prompt=prompt)])  # one prompt, repeated by grpo.train_lora

    def solve(questions: list[str], n: int) -> list[list[str]]:  # the frozen Solver, m answers each
        return solver([rzero.render_prompt(tokenizer, rzero.solver_messages(q)) for q in questions], n)


    history = grpo.train_lora(
        base_model=base_model, adapter=challenger_adapter, dataset=dataset,
        reward=reward_function(solve, m, tau, penalty_weight), tokenizer=tokenizer, output=partial, steps=steps,
        prompts_per_step=prompts_per_step, group_size=group_size, micro_batch_size=micro_batch_size,
        learning_rate=learning_rate, kl_coef=kl_coef, clip=(RECIPE["clip_low"], RECIPE["clip_high"]),
        lora_rank=lora_rank, lora_alpha=lora_alpha, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed,
        shown={"format_rate": "format", "consistency": "consistency", "penalty": "penalty",
               "zero_reward_share": "zero rewards"},
        needed={"format_rate": "no completion holds a non-empty <question>...</question> block, so every reward is "
                "0. Use a stronger base that follows the Challenger prompt, or change the prompt's format "
                "(rzero.challenger_messages)."},
        memory=memory, quantization=quantization, vllm_mode=vllm_mode, vllm_server_url=vllm_server_url,
    )
    summary = dict(
        stage="train_challenger", iteration=iteration, base_identity=artifacts.base_identity(base_model),
        args={k: str(v) for k, v in args.items()}, inputs=inputs, steps=steps,
        reward_first=history[0]["reward"] if history else None, reward_last=history[-1]["reward"] if history else None,
        reward_mean=grpo.mean(history, "reward"), format_rate=grpo.mean(history, "format_rate"),
        consistency_mean=grpo.mean(history, "consistency"), penalty_mean=grpo.mean(history, "penalty"),
        zero_reward_share=grpo.mean(history, "zero_reward_share"), history=history,
        seconds=round(time.time() - t0, 1),
        processes=artifacts.processes(),
        verifier_failures=grpo.summed(equivalence.failures()),  # every rank's: all "not equivalent"
    )
    grpo.publish(partial, output, summary, target)
    artifacts.log(f"train_challenger: iteration {iteration} done in {summary['seconds']:.0f} s | reward "
                  f"{summary['reward_first']:.3f} -> {summary['reward_last']:.3f} | "
                  f"format {summary['format_rate']:.0%} | consistency {summary['consistency_mean']:.2f} | "
                  f"{equivalence.failure_note(summary['verifier_failures'])}{grpo.processes_note()} | {output}")


if __name__ == "__main__":
    app()
