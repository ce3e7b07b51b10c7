"""Label the generated questions by majority vote of the Solver of iteration k-1, and keep the
ones at the edge of its ability.

Reads: the questions artifact of iteration k, the base model, the Solver adapter of iteration
k-1 (none for k = 1: the base answers).
Writes: `labeled.parquet` (one row per parsed question: the m answers, vote counts, pseudo-label,
consistency, kept flag, and where the micro-world's safe evaluator can score the question, the
true answer and whether the pseudo-label equals it), `train.parquet` (the kept rows: question,
label, consistency), `summary.json`, `DONE`; with --hub-repo also configs iterNN-labeled and
iterNN-train of that Hub dataset repo (then their completion markers summaries/<config>.json, the card).
Inputs are local folders or Hub references: --questions hf://datasets/<ns>/<repo>/iterNN-raw,
--solver-adapter hf://<ns>/<repo>@iterNN (see stages/hub.py).

Method (DESIGN.md section 1, steps 3-4): the Solver answers each question m times (temperature
1.0, top_p 1.0, top_k 40 as the reference's server); equivalent final \\boxed{} answers are grouped,
the largest group's answer is the pseudo-label y, and p = (largest group) / m counts empty
answers in m. Kept: |p - 1/2| <= delta (for m = 10, delta = 0.25 keeps 3-7 agreeing votes),
a non-empty label, and the first copy of an exactly repeated question only.
`--label-source truth` puts the safe evaluator's exact answer in place of y for the kept rows
(questions it cannot score are dropped): the upper bound of the loop, micro-world only.

Examples:
  python stages/label_questions.py --base-model Qwen/Qwen3-4B-Base --iteration 1 \\
      --questions runs/q4b/iter01/questions --output runs/q4b/iter01/labeled
  python stages/label_questions.py --base-model ~/.cache/rzero/micro-0123abcd --iteration 2 \\
      --questions runs/demo/iter02/questions --solver-adapter runs/demo/iter01/solver \\
      --output runs/demo/iter02/labeled --m 10 --max-new-tokens 96
  python stages/label_questions.py --base-model ~/.cache/rzero/micro-0123abcd --iteration 2 \\
      --questions hf://datasets/me/demo-questions/iter02-raw --solver-adapter hf://me/demo-solver@iter01 \\
      --output runs/demo/iter02/labeled --hub-repo me/demo-questions
"""

import time
from collections import Counter
from pathlib import Path

import typer

import artifacts
import equivalence
import generation
import hub
import microworld
import rzero

COLUMNS = {"sample_id", "completion", "question"}

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    base_model: str = typer.Option(..., help="Base model: local folder, Hub model id, or "
                                   "hf://<ns>/<repo>@<revision>.", rich_help_panel="Inputs"),
    questions: str = typer.Option(..., help="Questions artifact of iteration k: folder (questions.parquet) or "
                                  "hf://datasets/<ns>/<repo>/iterNN-raw[@<revision>].", rich_help_panel="Inputs"),
    solver_adapter: str = typer.Option("", help="Solver adapter of iteration k-1 (folder or "
                                       "hf://<ns>/<repo>@iterNN); empty for k = 1 (the base answers).",
                                       rich_help_panel="Inputs"),
    iteration: int = typer.Option(..., min=1, help="Iteration k (1, 2, ...).", rich_help_panel="Inputs"),
    output: Path = typer.Option(..., help="Folder for the labeled dataset.", rich_help_panel="Outputs"),
    overwrite: bool = typer.Option(False, help="Redo even if the output is complete.", rich_help_panel="Outputs"),
    m: int = typer.Option(10, min=2, help="m: Solver answers per question (paper: 10; reference data code: 9).",
                          rich_help_panel="Method"),
    delta: float = typer.Option(0.25, min=0.0, max=0.5, help="delta: keep |p - 1/2| <= delta (paper: 0.25).",
                                rich_help_panel="Method"),
    label_source: str = typer.Option("vote", help="vote: the majority answer (the method); truth: the safe "
                                     "evaluator's answer (micro-world upper bound).", rich_help_panel="Method"),
    max_new_tokens: int = typer.Option(4096, help="Max tokens per Solver answer.", rich_help_panel="Sampling"),
    top_k: int = typer.Option(40, help="top-k of the Solver's sampling (reference server: 40; 0 = off).",
                              rich_help_panel="Sampling"),
    backend: str = typer.Option("auto", help="Generation backend: auto, hf, vllm, server.", rich_help_panel="Sampling"),
    server_url: str = typer.Option("", help="OpenAI-compatible URL for --backend server.", rich_help_panel="Sampling"),
    batch_size: int = typer.Option(generation.HF_BATCH_SIZE, help="Sequences per transformers generate call (hf "
                                   "backend; vllm and server take every question at once).", rich_help_panel="Sampling"),
    seed: int = typer.Option(0, help="Sampling seed.", rich_help_panel="Sampling"),
    hub_repo: str = typer.Option("", help="Also push to this Hub dataset repo (<ns>/<name>, private) as configs "
                                 "iterNN-labeled and iterNN-train; empty = local only. Token: HF_TOKEN or the Hub "
                                 "login.", rich_help_panel="Hub"),
):
    """Majority-vote pseudo-labels, consistency p, and the band filter."""
    args = dict(locals())
    artifacts.log(f"label_questions: {args}")
    if label_source not in ("vote", "truth"):
        artifacts.fail(f"--label-source must be 'vote' or 'truth', not {label_source!r}.")
    target = hub.dataset_target(hub_repo, iteration, {"labeled": "labeled.parquet", "train": "train.parquet"})
    inputs = {}  # where each input came from (a Hub reference with its commit), for summary.json
    base_model = hub.base(base_model, inputs)
    questions = hub.input(questions, "--questions", "stages/generate_questions.py", inputs)
    solver_adapter = hub.optional_input(solver_adapter, "--solver-adapter",
                                        "stages/train_solver.py of the previous iteration", inputs)
    if iteration > 1 and not solver_adapter:
        artifacts.fail(f"--iteration {iteration} labels with the Solver of iteration {iteration - 1}: "
                       "pass --solver-adapter.")
    artifacts.check_lineage(base_model, iteration, {"--questions": (str(questions), iteration),
                                                    "--solver-adapter": (solver_adapter, iteration - 1)})
    from datasets import Dataset

    source = Dataset.from_parquet(str(questions / "questions.parquet"))
    if not COLUMNS <= set(source.column_names):
        artifacts.fail(f"{questions}/questions.parquet has columns {source.column_names}; expected {sorted(COLUMNS)}. "
                       "Pass the output of stages/generate_questions.py.")
    if not any(source["question"]):
        artifacts.fail(f"{questions} holds no parsed question in {source.num_rows} samples: nothing to label. "
                       "Check the Challenger (its format rate in summary.json) or generate more (--num-samples).")
    partial = hub.start("label_questions", output, overwrite, target)
    if partial is None:
        return

    from tqdm import tqdm

    t0 = time.time()
    rows = [r for r in source.to_list() if r["question"]]
    distinct = list(dict.fromkeys(r["question"] for r in rows))
    backend = generation.resolve_backend(backend)
    tokenizer = generation.load_tokenizer(base_model)
    sample = generation.make_sampler(
        base_model, solver_adapter, backend=backend, server_url=server_url, batch_size=batch_size, seed=seed,
        sampling=generation.Sampling(temperature=1.0, top_p=1.0, top_k=top_k, max_new_tokens=max_new_tokens),
    )
    votes: dict[str, dict] = {}
    chunk = max(1, batch_size // m) if backend == "hf" else len(distinct)  # vLLM: one list, it schedules the batches
    for i in tqdm(range(0, len(distinct), chunk), desc="label", unit="batch"):
        batch = distinct[i : i + chunk]
        outputs = sample([rzero.render_prompt(tokenizer, rzero.solver_messages(q)) for q in batch], m)
        answers_of = [[rzero.last_boxed(t) for t in texts] for texts in outputs]
        for q, answers, grouped in zip(batch, answers_of, equivalence.group_answers_many(answers_of)):
            label, p = rzero.vote(answers, grouped)
            groups = Counter(g for g in grouped if g >= 0)
            truth = microworld.evaluate_arithmetic(q)
            true_answer = microworld.format_number(truth) if truth is not None else None
            votes[q] = dict(answers=answers, votes=sorted(groups.values(), reverse=True), label=label, consistency=p,
                            true_answer=true_answer,
                            label_correct=equivalence.is_equivalent(true_answer, label) if truth is not None else None)

    seen: set[str] = set()
    labeled = []
    for r in rows:
        v = votes[r["question"]]
        repeat = r["question"] in seen
        seen.add(r["question"])
        kept = rzero.in_band(v["consistency"], delta) and bool(v["label"]) and not repeat
        if label_source == "truth":
            kept = kept and v["true_answer"] is not None
        labeled.append(dict(sample_id=r["sample_id"], question=r["question"], **v, repeat=repeat, kept=kept))
    train = [dict(question=r["question"], label=r["true_answer"] if label_source == "truth" else r["label"],
                  consistency=r["consistency"]) for r in labeled if r["kept"]]
    Dataset.from_list(labeled).to_parquet(str(partial / "labeled.parquet"))
    write_train(train, partial / "train.parquet")

    unique = [r for r in labeled if not r["repeat"]]
    scored = [r for r in unique if r["label_correct"] is not None]
    kept_scored = [r for r in scored if r["kept"]]
    histogram = Counter(round(r["consistency"] * m) for r in unique)
    summary = dict(
        stage="label_questions", iteration=iteration, base_identity=artifacts.base_identity(base_model),
        args={k: str(v) for k, v in args.items()}, inputs=inputs, backend=backend, questions=len(rows),
        distinct=len(unique), repeats=len(rows) - len(unique), kept=len(train),
        kept_share=len(train) / max(1, len(unique)),
        consistency_mean=sum(r["consistency"] for r in unique) / max(1, len(unique)),
        consistency_histogram={f"{k}/{m}": histogram.get(k, 0) for k in range(m + 1)},
        empty_labels=sum(not r["label"] for r in unique), scorable_share=len(scored) / max(1, len(unique)),
        pseudo_label_accuracy=share_correct(scored), kept_pseudo_label_accuracy=share_correct(kept_scored),
        # what the Solver trains on: the vote's labels, or the exact answers of --label-source truth
        trained_label_accuracy=(1.0 if label_source == "truth" and kept_scored else share_correct(kept_scored)),
        label_accuracy_by_votes={
            f"{k}/{m}": sum(r["label_correct"] for r in scored if round(r["consistency"] * m) == k)
            / max(1, sum(round(r["consistency"] * m) == k for r in scored)) for k in sorted(histogram)
        } if scored else None,
        label_source=label_source, seconds=round(time.time() - t0, 1),
        verifier_failures=equivalence.failures(),  # timeouts, dead workers, screened answers: all "not equivalent"
    )
    artifacts.finish(partial, output, summary)
    hub.push(output, target)
    accuracy = summary["kept_pseudo_label_accuracy"]
    artifacts.log(f"label_questions: iteration {iteration} done in {summary['seconds']:.0f} s | {len(unique)} distinct "
                  f"questions, kept {len(train)} | mean p {summary['consistency_mean']:.2f} | kept label accuracy "
                  f"{'n/a' if accuracy is None else f'{accuracy:.0%}'} | "
                  f"{equivalence.failure_note(summary['verifier_failures'])} | {output}")


def share_correct(rows: list[dict]) -> float | None:
    """Share of rows whose label equals the true answer (None: no scorable row)."""
    return sum(r["label_correct"] for r in rows) / len(rows) if rows else None


def write_train(rows: list[dict], path: Path) -> None:
    """train.parquet with its schema even when no question is kept (datasets cannot write zero rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("question", pa.string()), ("label", pa.string()), ("consistency", pa.float64())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


if __name__ == "__main__":
    app()
