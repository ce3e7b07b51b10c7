"""Label the generated questions by majority vote of the Solver of iteration k-1, and keep the
ones at the edge of its ability.

Reads: the questions artifact of iteration k, the base model, the Solver adapter of iteration
k-1 (none for k = 1: the base answers).
Writes: `labeled.parquet` (one row per parsed question: the m answers, vote counts, pseudo-label,
consistency, kept flag, and where the micro-world's safe evaluator can score the question, the
true answer and whether the pseudo-label equals it), `train.parquet` (the kept rows: question,
label, consistency, the m answers), with --probe `probe.parquet` (the probe's votes), `summary.json`,
`DONE`; with --hub-repo also configs iterNN-labeled, iterNN-train (and iterNN-probe) of that Hub dataset repo (then
their completion markers summaries/<config>.json, the card).
Inputs are local folders or Hub references: --questions hf://datasets/<ns>/<repo>/iterNN-raw,
--solver-adapter hf://<ns>/<repo>@iterNN (see stages/hub.py).

Method (DESIGN.md section 1, steps 3-4): the Solver answers each question m times (temperature
1.0, top_p 1.0, top_k 40 as the reference's server); equivalent final \\boxed{} answers are grouped,
the largest group's answer is the pseudo-label y, and p = (largest group) / m counts empty
answers in m. Kept: |p - 1/2| <= delta (for m = 10, delta = 0.25 keeps 3-7 agreeing votes),
a non-empty label, and the first copy of an exactly repeated question only.
`--label-source truth` puts the safe evaluator's exact answer in place of y for the kept rows
(questions it cannot score are dropped): the upper bound of the loop, micro-world only.
--probe votes a small gold-labeled set (GSM8K's and MATH's training splits, say) with the same Solver,
m and band, and reports its pseudo-label accuracy and consistency: label decay, measured on any model
(stages/probe.py).
Several GPUs: --data-parallel n votes slices of the distinct questions in n processes, one per GPU,
and merges them in order into the same artifact (stages/shards.py: resumable shard by shard).

Examples:
  python stages/label_questions.py --base-model Qwen/Qwen3-4B-Base --iteration 1 \\
      --questions runs/q4b/iter01/questions --output runs/q4b/iter01/labeled
  python stages/label_questions.py --base-model ~/.cache/rzero/micro-0123abcd --iteration 2 \\
      --questions runs/demo/iter02/questions --solver-adapter runs/demo/iter01/solver \\
      --output runs/demo/iter02/labeled --m 10 --max-new-tokens 96
  python stages/label_questions.py --base-model ~/.cache/rzero/micro-0123abcd --iteration 2 \\
      --questions hf://datasets/me/demo-questions/iter02-raw --solver-adapter hf://me/demo-solver@iter01 \\
      --output runs/demo/iter02/labeled --hub-repo me/demo-questions
  python stages/label_questions.py --base-model Qwen/Qwen3-4B-Base --iteration 1 \\
      --questions runs/q4b/iter01/questions --output runs/q4b/iter01/labeled --data-parallel 8
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
import probe as gold_probe
import rzero
import shards

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
    probe: list[str] = typer.Option([], help="A gold-labeled probe set, voted like the questions and never trained "
                                    "on: a .jsonl/.json/.parquet file or <dataset>[:<config>]:<split> (e.g. "
                                    "openai/gsm8k:main:train); repeat for several; none = off.",
                                    rich_help_panel="Method"),
    probe_size: int = typer.Option(200, min=1, help="Rows per probe set: a fixed-seed sample, the same in every "
                                   "iteration.", rich_help_panel="Method"),
    max_new_tokens: int = typer.Option(4096, help="Max tokens per Solver answer.", rich_help_panel="Sampling"),
    top_k: int = typer.Option(40, help="top-k of the Solver's sampling (reference server: 40; 0 = off).",
                              rich_help_panel="Sampling"),
    backend: str = typer.Option("auto", help="Generation backend: auto, hf, vllm, server.", rich_help_panel="Sampling"),
    server_url: str = typer.Option("", help="OpenAI-compatible URL for --backend server.", rich_help_panel="Sampling"),
    batch_size: int = typer.Option(generation.HF_BATCH_SIZE, help="Sequences per transformers generate call (hf "
                                   "backend; vllm and server take every question at once).", rich_help_panel="Sampling"),
    seed: int = typer.Option(0, help="Sampling seed.", rich_help_panel="Sampling"),
    data_parallel: int = typer.Option(1, min=1, help="Processes, one per visible GPU, each its own engine, over "
                                      "slices of the distinct questions, merged in order (stages/shards.py); "
                                      "1 = this one.", rich_help_panel="Sampling"),
    shard: str = typer.Option("", help="i/n: only slice i of n, into .<output>.shards/ (what --data-parallel n "
                              "runs; by hand on machines sharing the folder, then --data-parallel n merges).",
                              rich_help_panel="Sampling"),
    hub_repo: str = typer.Option("", help="Also push to this Hub dataset repo (<ns>/<name>, private) as configs "
                                 "iterNN-labeled and iterNN-train; empty = local only. Token: HF_TOKEN or the Hub "
                                 "login.", rich_help_panel="Hub"),
):
    """Majority-vote pseudo-labels, consistency p, and the band filter."""
    args = dict(locals())
    artifacts.log(f"label_questions: {args}")
    if label_source not in ("vote", "truth"):
        artifacts.fail(f"--label-source must be 'vote' or 'truth', not {label_source!r}.")
    shard = shards.parse(shard)
    if shard and (hub_repo or data_parallel > 1):
        artifacts.fail("--shard runs one slice for a merging run: pass --hub-repo and --data-parallel to that run.")
    target = hub.dataset_target(hub_repo, iteration, {"labeled": "labeled.parquet", "train": "train.parquet",
                                                      **({"probe": "probe.parquet"} if probe else {})})
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
    probe_rows = [] if shard else [r for spec in probe for r in gold_probe.load(spec, probe_size)]
    # as given, hf:// references too, so that a shard run by hand elsewhere matches; the probe is this process's
    shard_flags = shards.flags(args, skip=("probe", "probe_size"))
    partial = shards.begin(output, shard, shard_flags) if shard else hub.start("label_questions", output,
                                                                                 overwrite, target)
    if partial is None:
        return

    import pyarrow.parquet as pq

    t0 = time.time()
    rows = [r for r in source.to_list() if r["question"]]
    distinct = list(dict.fromkeys(r["question"] for r in rows))
    tokenizer = generation.load_tokenizer(base_model)
    sampling = generation.Sampling(temperature=1.0, top_p=1.0, top_k=top_k, max_new_tokens=max_new_tokens)
    sample, from_shards = None, {k: 0 for k in equivalence.FAILURE_KEYS}
    if data_parallel > 1:  # the shards vote; this process merges their votes in order
        folders = shards.run("label_questions", output, data_parallel, shard_flags, overwrite)
        votes = {r.pop("question"): r for f in folders for r in pq.read_table(f / "votes.parquet").to_pylist()}
        summaries = [artifacts.read_summary(f) for f in folders]
        backend = summaries[0]["backend"]
        from_shards = {k: sum(s["verifier_failures"][k] for s in summaries) for k in from_shards}
    else:
        backend = generation.resolve_backend(backend)
    # hf: batches of batch_size // m questions (one generate call each); vLLM and a server take a slice at once
    per_call = max(1, batch_size // m) if backend == "hf" else None
    if data_parallel == 1:
        start, stop, first_call = shards.work(len(distinct), per_call or 1, shard)
        sample = generation.make_sampler(base_model, solver_adapter, sampling, backend=backend, server_url=server_url,
                                         batch_size=batch_size, seed=shards.seed(seed, shard, backend),
                                         first_call=first_call)
        votes = vote(distinct[start:stop], sample, tokenizer, m, per_call)
    if probe_rows:  # after the shards have exited, so that an engine of this process fits beside nothing
        sample = sample or generation.make_sampler(base_model, solver_adapter, sampling, backend=backend,
                                                   server_url=server_url, batch_size=batch_size, seed=seed)
        probe_rows = voted_probe(probe_rows, vote([r["question"] for r in probe_rows], sample, tokenizer, m, per_call),
                                 delta)
    failures = {k: equivalence.failures()[k] + from_shards[k] for k in from_shards}
    if shard:
        write_votes(votes, partial / "votes.parquet")
        artifacts.finish(partial, shards.folder(output, *shard), dict(flags=shard_flags, backend=backend,
                                                                       questions=len(votes),
                                                                       verifier_failures=failures))
        artifacts.log(f"label_questions: shard {shard[0]}/{shard[1]} done in {time.time() - t0:.0f} s | distinct "
                      f"questions {start}..{stop - 1} | {equivalence.failure_note(failures)}")
        return

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
                  consistency=r["consistency"], answers=r["answers"]) for r in labeled if r["kept"]]
    Dataset.from_list(labeled).to_parquet(str(partial / "labeled.parquet"))
    write_train(train, partial / "train.parquet")
    if probe_rows:
        Dataset.from_list(probe_rows).to_parquet(str(partial / "probe.parquet"))

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
        data_parallel=data_parallel, probe=gold_probe.scores(probe_rows) if probe_rows else None,
        verifier_failures=failures,  # timeouts, dead workers, screened answers: all "not equivalent"
    )
    artifacts.finish(partial, output, summary)
    shards.clear(output)
    hub.push(output, target)
    accuracy = summary["kept_pseudo_label_accuracy"]
    artifacts.log(f"label_questions: iteration {iteration} done in {summary['seconds']:.0f} s | {len(unique)} distinct "
                  f"questions, kept {len(train)} | mean p {summary['consistency_mean']:.2f} | kept label accuracy "
                  f"{'n/a' if accuracy is None else f'{accuracy:.0%}'} | {probe_note(summary['probe'])}"
                  f"{equivalence.failure_note(summary['verifier_failures'])} | {output}")


def vote(questions: list[str], sample, tokenizer, m: int, per_call: int | None) -> dict[str, dict]:
    """Each question's m answers, vote counts, pseudo-label y, consistency p, and (where the
    micro-world's safe evaluator can score it) the true answer and whether y equals it; per_call
    questions per sampler call (None: all at once)."""
    from tqdm import tqdm

    votes: dict[str, dict] = {}
    per_call = per_call or max(1, len(questions))
    for i in tqdm(range(0, len(questions), per_call), desc="label", unit="batch"):
        batch = questions[i : i + per_call]
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
    return votes


def voted_probe(rows: list[dict], votes: dict[str, dict], delta: float) -> list[dict]:
    """The probe's rows with the Solver's vote: answers, pseudo-label y, consistency p, whether p is in
    the band |p - 1/2| <= delta, and whether y equals the gold answer."""
    out = []
    for r in rows:
        v = votes[r["question"]]
        out.append(dict(**r, answers=v["answers"], votes=v["votes"], label=v["label"], consistency=v["consistency"],
                        in_band=rzero.in_band(v["consistency"], delta),
                        label_correct=bool(v["label"]) and equivalence.is_equivalent(r["gold"], v["label"])))
    return out


def probe_note(scores: dict | None) -> str:
    """The closing-line fragment of the probe ('' when it is off)."""
    if scores is None:
        return ""
    band = scores["band_pseudo_label_accuracy"]
    return (f"probe label accuracy {scores['pseudo_label_accuracy']:.0%} (in band "
            f"{'n/a' if band is None else f'{band:.0%}'}), mean p {scores['consistency_mean']:.2f} | ")


def write_votes(votes: dict[str, dict], path: Path) -> None:
    """A shard's votes, one row per question, with their schema even for an empty shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("question", pa.string()), ("answers", pa.list_(pa.string())), ("votes", pa.list_(pa.int64())),
                        ("label", pa.string()), ("consistency", pa.float64()), ("true_answer", pa.string()),
                        ("label_correct", pa.bool_())])
    pq.write_table(pa.Table.from_pylist([dict(question=q, **v) for q, v in votes.items()], schema=schema), path)


def share_correct(rows: list[dict]) -> float | None:
    """Share of rows whose label equals the true answer (None: no scorable row)."""
    return sum(r["label_correct"] for r in rows) / len(rows) if rows else None


def write_train(rows: list[dict], path: Path) -> None:
    """train.parquet with its schema even when no question is kept (datasets cannot write zero rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("question", pa.string()), ("label", pa.string()), ("consistency", pa.float64()),
                        ("answers", pa.list_(pa.string()))])  # the m answers: --mitigation restrain weighs them
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


if __name__ == "__main__":
    app()
