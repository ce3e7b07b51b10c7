"""Generate candidate questions with the Challenger of iteration k.

Reads: the base model and the Challenger adapter of iteration k (none: the untrained base writes
the questions, the paper's "Base Challenger" control).
Writes: `questions.parquet`, one row per sample (sample_id, completion, question or null),
`summary.json` (counts, parse rate, distinct questions), `DONE`; with --hub-repo also config
iterNN-raw of that Hub dataset repo (then its completion marker summaries/iterNN-raw.json and the card).
Inputs are local folders or Hub references: hf://<ns>/<repo>@<revision> (see stages/hub.py).

Method (DESIGN.md section 1, step 2): N samples of the fixed Challenger prompt at temperature 1.0,
top_p 0.95; the question is the last non-empty <question>...</question> block of each.
Several GPUs: --data-parallel n samples slices of the N in n processes, one per GPU, and merges them
in order into the same artifact (stages/shards.py: resumable shard by shard).

Examples:
  python stages/generate_questions.py --base-model Qwen/Qwen3-4B-Base --iteration 1 \\
      --challenger-adapter runs/q4b/iter01/challenger --output runs/q4b/iter01/questions
  python stages/generate_questions.py --base-model ~/.cache/rzero/micro-0123abcd --iteration 1 \\
      --challenger-adapter runs/demo/iter01/challenger --output runs/demo/iter01/questions \\
      --num-samples 512 --max-new-tokens 48
  python stages/generate_questions.py --base-model ~/.cache/rzero/micro-0123abcd --iteration 1 \\
      --challenger-adapter hf://me/demo-challenger@iter01 --output runs/demo/iter01/questions \\
      --hub-repo me/demo-questions
"""

import time
from pathlib import Path

import typer

import artifacts
import generation
import hub
import rzero
import shards

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    base_model: str = typer.Option(..., help="Base model: local folder, Hub model id, or "
                                   "hf://<ns>/<repo>@<revision>.", rich_help_panel="Inputs"),
    challenger_adapter: str = typer.Option("", help="Challenger adapter of iteration k (folder or "
                                           "hf://<ns>/<repo>@iterNN); empty = the untrained base (control).",
                                           rich_help_panel="Inputs"),
    iteration: int = typer.Option(..., min=1, help="Iteration k (1, 2, ...).", rich_help_panel="Inputs"),
    output: Path = typer.Option(..., help="Folder for the questions dataset.", rich_help_panel="Outputs"),
    overwrite: bool = typer.Option(False, help="Redo even if the output is complete.", rich_help_panel="Outputs"),
    num_samples: int = typer.Option(8000, min=1, help="N: Challenger samples (paper: 8000).", rich_help_panel="Method"),
    temperature: float = typer.Option(1.0, help="Sampling temperature (paper: 1.0).", rich_help_panel="Sampling"),
    top_p: float = typer.Option(0.95, help="Nucleus sampling (paper: 0.95).", rich_help_panel="Sampling"),
    max_new_tokens: int = typer.Option(4096, help="Max tokens per sample (paper: 4096).", rich_help_panel="Sampling"),
    backend: str = typer.Option("auto", help="Generation backend: auto (vLLM on a GPU if installed, else "
                                "transformers), hf, vllm, server.", rich_help_panel="Sampling"),
    server_url: str = typer.Option("", help="OpenAI-compatible URL for --backend server.", rich_help_panel="Sampling"),
    batch_size: int = typer.Option(generation.HF_BATCH_SIZE, help="Sequences per transformers generate call (hf "
                                   "backend; vllm and server take all N at once).", rich_help_panel="Sampling"),
    seed: int = typer.Option(0, help="Sampling seed.", rich_help_panel="Sampling"),
    data_parallel: int = typer.Option(1, min=1, help="Processes, one per visible GPU, each its own engine, over "
                                      "slices of the N samples, merged in order (stages/shards.py); 1 = this one.",
                                      rich_help_panel="Sampling"),
    shard: str = typer.Option("", help="i/n: only slice i of n, into .<output>.shards/ (what --data-parallel n "
                              "runs; by hand on machines sharing the folder, then --data-parallel n merges).",
                              rich_help_panel="Sampling"),
    hub_repo: str = typer.Option("", help="Also push the questions to this Hub dataset repo (<ns>/<name>, private) "
                                 "as config iterNN-raw; empty = local only. Token: HF_TOKEN or the Hub login.",
                                 rich_help_panel="Hub"),
):
    """Sample N Challenger completions and parse their questions."""
    args = dict(locals())
    artifacts.log(f"generate_questions: {args}")
    shard = shards.parse(shard)
    if shard and (hub_repo or data_parallel > 1):
        artifacts.fail("--shard runs one slice for a merging run: pass --hub-repo and --data-parallel to that run.")
    target = hub.dataset_target(hub_repo, iteration, {"raw": "questions.parquet"})  # checks the token first
    inputs = {}  # where each input came from (a Hub reference with its commit), for summary.json
    base_model = hub.base(base_model, inputs)
    challenger_adapter = hub.optional_input(challenger_adapter, "--challenger-adapter",
                                            "stages/train_challenger.py", inputs)
    artifacts.check_lineage(base_model, iteration, {"--challenger-adapter": (challenger_adapter, iteration)})
    shard_flags = shards.flags(args)  # as given, hf:// references too: a shard run by hand elsewhere matches
    partial = shards.begin(output, shard, shard_flags) if shard else hub.start("generate_questions", output,
                                                                                 overwrite, target)
    if partial is None:
        return

    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    t0 = time.time()
    if data_parallel > 1:  # the shards sample; this process merges their rows in order
        folders = shards.run("generate_questions", output, data_parallel, shard_flags, overwrite)
        completions = [c for f in folders for c in pq.read_table(f / "questions.parquet")["completion"].to_pylist()]
        backend = artifacts.read_summary(folders[0])["backend"]
    else:
        backend = generation.resolve_backend(backend)
        start, stop, first_call = shards.work(num_samples, batch_size if backend == "hf" else 1, shard)
        completions = sample_questions(base_model, challenger_adapter, stop - start, backend, server_url, batch_size,
                                       shards.seed(seed, shard, backend), first_call,
                                       generation.Sampling(temperature=temperature, top_p=top_p,
                                                           max_new_tokens=max_new_tokens))
    if shard:
        pq.write_table(pa.table(dict(completion=pa.array(completions, pa.string()))), partial / "questions.parquet")
        artifacts.finish(partial, shards.folder(output, *shard), dict(flags=shard_flags, backend=backend,
                                                                       samples=len(completions)))
        artifacts.log(f"generate_questions: shard {shard[0]}/{shard[1]} done in {time.time() - t0:.0f} s | "
                      f"samples {start}..{stop - 1}")
        return
    questions = [rzero.extract_question(c) for c in completions]
    Dataset.from_dict(dict(sample_id=list(range(num_samples)), completion=completions, question=questions)) \
        .to_parquet(str(partial / "questions.parquet"))

    parsed = [q for q in questions if q]
    summary = dict(
        stage="generate_questions", iteration=iteration, base_identity=artifacts.base_identity(base_model),
        args={k: str(v) for k, v in args.items()}, inputs=inputs,
        challenger="base (control)" if not challenger_adapter else args["challenger_adapter"],
        backend=backend, data_parallel=data_parallel, num_samples=num_samples, parsed=len(parsed),
        parse_rate=len(parsed) / num_samples, distinct=len(set(parsed)), seconds=round(time.time() - t0, 1),
    )
    artifacts.finish(partial, output, summary)
    shards.clear(output)
    hub.push(output, target)
    artifacts.log(f"generate_questions: iteration {iteration} done in {summary['seconds']:.0f} s | "
                  f"{num_samples} samples, {len(parsed)} questions ({summary['parse_rate']:.0%}), "
                  f"{summary['distinct']} distinct | {output}")


def sample_questions(base_model, challenger_adapter, count, backend, server_url, batch_size, seed, first_call,
                     sampling) -> list[str]:
    """`count` completions of the Challenger prompt, batch_size per transformers call (vLLM and a
    server schedule all of them themselves: one call, fresh seeds per sequence)."""
    from tqdm import tqdm

    tokenizer = generation.load_tokenizer(base_model)
    sample = generation.make_sampler(base_model, challenger_adapter, backend=backend, server_url=server_url,
                                     batch_size=batch_size, seed=seed, first_call=first_call, sampling=sampling)
    prompt = rzero.render_prompt(tokenizer, rzero.challenger_messages())
    per_call = batch_size if backend == "hf" else count
    completions: list[str] = []
    with tqdm(total=count, desc="generate", unit="sample") as bar:
        while len(completions) < count:
            chunk = min(per_call, count - len(completions))
            completions += sample([prompt], chunk)[0]
            bar.update(chunk)
    return completions


if __name__ == "__main__":
    app()
