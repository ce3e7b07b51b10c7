"""Report on one run (or several side by side): a markdown table and PNG plots across iterations.

Reads: runs/<run>/iterNN/<stage>/summary.json of every stage that is complete, and
runs/<run>/stage_times.tsv written by the driver; or, for `--run hf://<ns>/<run>`, the summaries of
the run's artifacts on the Hub (repos <ns>/<run>-challenger, -solver, -questions; minutes are then
each stage's own seconds). Writes: `report.md`, `scores.png` (held-out
accuracy per iteration, one line per run), `consistency.png` (the consistency histogram of each
iteration of the first run), `label_accuracy.png` (pseudo-label accuracy per iteration, where
the micro-world can score it), `summary.json`, `DONE`. A report is a view of its inputs, so it is
always rebuilt (atomically); it never touches the runs.

Rows: the base (iteration 0) and each iteration. Columns: every task the evaluate stage ran, the
paper's MATH-avg and Overall where those ran, questions generated / kept, mean consistency p,
pseudo-label accuracy (all labeled / kept, where the micro-world can score it), the accuracy of the
labels the Solver trained on, the gold probe's label accuracy and mean p (label_questions --probe),
Challenger reward, and minutes per stage.
Under each table, the report reads the run: the best iteration by the held-out headline score with
two standard errors (by the probe's label accuracy where nothing was evaluated), and one line on label
decay: label accuracy (the probe's, else the kept questions') or mean consistency p falling by more
than DECAY_ACCURACY / DECAY_CONSISTENCY from one iteration to the next. With `--arm`, a table across
seeds: each arm's mean held-out score per iteration +- two standard errors over its seeds, and each
arm's difference from the first at the last iteration (a run stopped by an iteration that kept nothing
keeps the score of the Solver it left).

Examples:
  python stages/report.py --run runs/demo --output runs/demo/report
  python stages/report.py --run runs/demo --run runs/demo-control --run runs/demo-truth --output report
  python stages/report.py --run hf://me/demo --output runs/demo/report
  python stages/report.py --arm loop=runs/loop-s0,runs/loop-s1,runs/loop-s2 \
                          --arm control=runs/control-s0,runs/control-s1,runs/control-s2 --output report
"""

import csv
import json
import re
import statistics
from pathlib import Path

import typer

import artifacts

STAGES = ("challenger", "questions", "labeled", "solver", "evaluate")
DECAY_ACCURACY = 0.05  # a fall of label accuracy between two iterations that the report flags (5 points)
DECAY_CONSISTENCY = 0.05  # a fall of mean consistency p that it flags

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def collect(run: Path | str) -> list[dict]:
    """One dict per iteration present in `run`: the summaries of its complete stages, and times."""
    if str(run).startswith("hf://"):
        found = hub_summaries(str(run))
        return [dict(iteration=k, times={s: found[k][s].get("seconds") if s in found[k] else None for s in STAGES},
                     **found[k]) for k in sorted(found)]
    times: dict = {}
    if (run / "stage_times.tsv").is_file():
        for k, name, seconds in csv.reader((run / "stage_times.tsv").open(), delimiter="\t"):
            times[(int(k), name)] = int(seconds)  # the last entry wins: a rerun's time
    rows = []
    for folder in sorted(run.glob("iter[0-9][0-9]")):
        k = int(folder.name[4:])
        row = dict(iteration=k, times={s: times.get((k, s)) for s in STAGES})
        for stage in STAGES:
            if artifacts.is_complete(folder / stage):
                row[stage] = artifacts.read_summary(folder / stage)
        rows.append(row)
    return rows


# --- a run on the Hub --------------------------------------------------------------------


def hub_summaries(run: str) -> dict[int, dict[str, dict]]:
    """Summaries of every complete artifact of the Hub run `hf://<ns>/<run>` (repos <ns>/<run>-challenger,
    -solver, -questions), as {iteration: {local stage folder name: summary}}."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    import httpx

    import hub

    r = hub.parse(run)
    hub.check_token(required=False)
    api, rows = HfApi(), {}

    def read(repo, path, **kwargs):
        return json.loads(Path(hf_hub_download(repo, path, **kwargs)).read_text())

    try:
        for role in ("challenger", "solver"):
            repo = f"{r['repo']}-{role}"
            try:
                branches = [b.name for b in api.list_repo_refs(repo).branches if re.fullmatch(r"iter\d+", b.name)]
            except RepositoryNotFoundError:
                continue
            for branch in branches:
                files = set(api.list_repo_files(repo, revision=branch))
                for prefix, stage in (("", role), ("evaluate/", "evaluate")):
                    if {prefix + artifacts.DONE, prefix + artifacts.SUMMARY} <= files:
                        rows.setdefault(int(branch[4:]), {})[stage] = read(repo, prefix + artifacts.SUMMARY,
                                                                          revision=branch)
        repo = f"{r['repo']}-questions"
        try:
            files = api.list_repo_files(repo, repo_type="dataset")
        except RepositoryNotFoundError:
            files = []
        for path in files:
            m = re.fullmatch(r"summaries/iter(\d+)-(raw|labeled)\.json", path)
            if m:
                stage = {"raw": "questions", "labeled": "labeled"}[m.group(2)]
                rows.setdefault(int(m.group(1)), {})[stage] = read(repo, path, repo_type="dataset")["summary"]
    except (httpx.HTTPError, OSError) as e:  # a Hub error or a network failure: one line; a bug still raises
        artifacts.fail(f"reading the run {run} from the Hub: {hub.reason(e)}")
    return rows


def fmt(value, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if percent else (f"{value:.2f}" if isinstance(value, float) else str(value))


def challenger_cap(row: dict) -> int | None:
    """The Challenger's cap on new tokens where it is shorter than the Solver's (CHALLENGER_MAX_NEW_TOKENS):
    a cap on question length, which changes what the Challenger can write; else None."""
    cap = (row.get("questions") or {}).get("args", {}).get("max_new_tokens")
    solver = (row.get("labeled") or {}).get("args", {}).get("max_new_tokens")
    return int(cap) if cap is not None and solver is not None and int(cap) < int(solver) else None


def table(run: Path, rows: list[dict]) -> list[str]:
    tasks = list(dict.fromkeys(t for r in rows for t in r.get("evaluate", {}).get("scores", {})))
    paper = [p for p in ("MATH-avg", "Overall")
             if any((r.get("evaluate", {}).get("paper") or {}).get(p) is not None for r in rows)]
    probed = any((r.get("labeled") or {}).get("probe") for r in rows)
    head = ["iter", *tasks, *paper, "generated", "kept", "mean p", "vote label acc (all / kept)",
            "trained-on label acc", *(["probe label acc (all / band)", "probe mean p"] if probed else []),
            "Challenger reward", "minutes per stage"]
    mitigations = sorted({r["solver"]["mitigation"] for r in rows if r.get("solver", {}).get("mitigation", "none")
                          != "none"})  # a label-decay mitigation changes what the column below means
    caps = sorted({cap for cap in map(challenger_cap, rows) if cap is not None})
    notes = ([f"Solver mitigation: {', '.join(mitigations)}"] if mitigations else []) + \
            ([f"Challenger capped at {', '.join(map(str, caps))} new tokens"] if caps else [])
    lines = [f"### {run}" + (f" ({'; '.join(notes)})" if notes else ""), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ev, q, lab, ch = r.get("evaluate", {}), r.get("questions", {}), r.get("labeled", {}), r.get("challenger", {})
        minutes = ", ".join(f"{s} {t / 60:.1f}" for s, t in r["times"].items() if t is not None)
        probe = lab.get("probe") or {}
        probe_cells = [f"{fmt(probe.get('pseudo_label_accuracy'), True)} / "
                       f"{fmt(probe.get('band_pseudo_label_accuracy'), True)}", fmt(probe.get("consistency_mean"))]
        cells = [str(r["iteration"]), *(fmt(ev.get("scores", {}).get(t), True) for t in tasks),
                 *(fmt((ev.get("paper") or {}).get(p), True) for p in paper),
                 fmt(q.get("parsed")), fmt(lab.get("kept")), fmt(lab.get("consistency_mean")),
                 f"{fmt(lab.get('pseudo_label_accuracy'), True)} / {fmt(lab.get('kept_pseudo_label_accuracy'), True)}",
                 fmt(lab.get("trained_label_accuracy"), True),  # 100 for a LABEL_SOURCE=truth run
                 *(probe_cells if probed else []),
                 fmt(ch.get("reward_mean")), minutes or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def best_iteration(rows: list[dict]) -> dict | None:
    """The iteration with the highest held-out headline score, with two standard errors of that score
    (binomial, over its questions); by the probe's label accuracy where nothing was evaluated. Ties go
    to the earlier iteration."""
    scored = [r for r in rows if r.get("evaluate", {}).get("scores")]
    if scored:
        task = headline(scored[0]["evaluate"])
        candidates = [(headline_scores(r["evaluate"]).get(task), r) for r in scored]
        by, n_of = task, lambda r: (r["evaluate"].get("samples") or {}).get(task)
    else:
        task = "probe label accuracy"
        candidates = [(((r.get("labeled") or {}).get("probe") or {}).get("pseudo_label_accuracy"), r) for r in rows]
        by, n_of = task, lambda r: r["labeled"]["probe"]["questions"]
    candidates = [(v, r) for v, r in candidates if v is not None]
    if not candidates:
        return None
    value, row = max(candidates, key=lambda c: (c[0], -c[1]["iteration"]))
    n = n_of(row)
    return dict(iteration=row["iteration"], by=by, value=value,
                two_se=2 * (value * (1 - value) / n) ** 0.5 if n else None)


def decay(rows: list[dict]) -> dict:
    """Label decay between consecutive labeled iterations: the falls of label accuracy (the probe's
    where it ran, else the kept questions' in the micro-world) beyond DECAY_ACCURACY, and of mean
    consistency p beyond DECAY_CONSISTENCY."""
    labeled = [r for r in rows if r.get("labeled")]
    probed = any(r["labeled"].get("probe") for r in labeled)
    accuracy = [((r["labeled"].get("probe") or {}).get("pseudo_label_accuracy") if probed
                 else r["labeled"].get("kept_pseudo_label_accuracy")) for r in labeled]
    consistency = [((r["labeled"].get("probe") or {}).get("consistency_mean") if probed
                    else r["labeled"].get("consistency_mean")) for r in labeled]
    falls = []
    for what, series, threshold in (("probe label accuracy" if probed else "kept pseudo-label accuracy", accuracy,
                                     DECAY_ACCURACY),
                                    ("probe mean p" if probed else "mean p", consistency, DECAY_CONSISTENCY)):
        for i in range(1, len(labeled)):
            a, b = series[i - 1], series[i]
            if a is not None and b is not None and a - b > threshold:
                falls.append(dict(what=what, before=a, after=b, iterations=[labeled[i - 1]["iteration"],
                                                                             labeled[i]["iteration"]]))
    return dict(falls=falls, compared=len(labeled), source="probe" if probed else "kept questions")


def reading(rows: list[dict]) -> tuple[list[str], dict]:
    """The report's two lines under a run's table, and the same for its summary.json."""
    best, falls = best_iteration(rows), decay(rows)
    lines = []
    if best:
        error = f" +- {100 * best['two_se']:.1f} (two standard errors)" if best["two_se"] is not None else ""
        lines.append(f"**Best iteration: {best['iteration']}** by {best['by']}: {100 * best['value']:.1f}{error}.")
    if falls["falls"]:
        lines.append("**Label decay:** " + "; ".join(
            f"{f['what']} fell {fmt(f['before'], 'accuracy' in f['what'])} -> "
            f"{fmt(f['after'], 'accuracy' in f['what'])} from iteration {f['iterations'][0]} to {f['iterations'][1]}"
            for f in falls["falls"])
            + f" (flagged beyond {100 * DECAY_ACCURACY:.0f} points of accuracy or {DECAY_CONSISTENCY} of mean p).")
    elif falls["compared"] > 1:
        lines.append(f"No label decay: label accuracy and mean p ({falls['source']}) fell by no more than "
                     f"{100 * DECAY_ACCURACY:.0f} points and {DECAY_CONSISTENCY} between iterations.")
    return ([*lines, ""] if lines else []), dict(best=best, decay=falls)


def seed_scores(rows: list[dict], task: str, last: int) -> list[float | None]:
    """A run's `task` score at iterations 0..last. A run that stopped because an iteration kept no
    question (the Solver stage refuses to train on nothing) keeps the score of the Solver it left."""
    by_k = {r["iteration"]: r for r in rows}
    scores, stopped = [], False
    for k in range(last + 1):
        row = by_k.get(k, {})
        stopped = stopped or (row.get("labeled") or {}).get("kept") == 0
        score = headline_scores(row["evaluate"]).get(task) if row.get("evaluate") else None
        scores.append(score if score is not None or not stopped else (scores[-1] if scores else None))
    return scores


def across_seeds(arms: dict[str, list[list[dict]]]) -> tuple[list[str], dict]:
    """The arms' held-out headline score per iteration over their seeds: mean +- two standard errors
    of the mean (the spread between seeds, which on a CPU is larger than one test set's binomial
    error), and each arm against the first: the difference of means +- two standard errors of it."""
    evaluated = [r["evaluate"] for runs in arms.values() for rows in runs for r in rows if r.get("evaluate")]
    if not evaluated:
        return [], {}
    task = headline(evaluated[0])
    last = max(r["iteration"] for runs in arms.values() for rows in runs for r in rows)
    stats = {}
    for name, runs in arms.items():
        per_seed = [seed_scores(rows, task, last) for rows in runs]
        stats[name] = []
        for k in range(last + 1):
            values = [s[k] for s in per_seed if s[k] is not None]
            mean = statistics.mean(values) if values else None
            two_se = 2 * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None
            stats[name].append(dict(mean=mean, two_se=two_se, seeds=values))
    head = ["arm", "seeds", *(f"iteration {k}" for k in range(last + 1))]
    lines = [f"### Across seeds: {task}, mean +- two standard errors of the mean (per seed)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    def cell(c: dict) -> str:
        if c["mean"] is None:
            return "-"
        error = f" +- {100 * c['two_se']:.1f}" if c["two_se"] is not None else ""
        return f"{100 * c['mean']:.1f}{error} ({', '.join(f'{100 * v:.1f}' for v in c['seeds'])})"

    for name, cells in stats.items():
        lines.append("| " + " | ".join([name, str(len(arms[name])), *map(cell, cells)]) + " |")
    lines.append("")
    first, *others = stats
    differences = {}
    for name in others:
        a, b = stats[name][last], stats[first][last]
        if a["mean"] is None or b["mean"] is None or a["two_se"] is None or b["two_se"] is None:
            continue
        diff, two_se = a["mean"] - b["mean"], (a["two_se"] ** 2 + b["two_se"] ** 2) ** 0.5
        differences[name] = dict(against=first, iteration=last, difference=diff, two_se=two_se)
        lines.append(f"**{name} - {first}** at iteration {last}: {100 * diff:+.1f} points, two standard errors of "
                     f"the difference {100 * two_se:.1f}: {'beyond' if abs(diff) > two_se else 'inside'} the noise.")
    return lines + [""], dict(task=task, arms=stats, differences=differences)


def headline_scores(evaluation: dict) -> dict[str, float]:
    """Every score of an evaluate summary: its tasks and groups, and the paper's MATH-avg and Overall."""
    paper = {k: v for k, v in (evaluation.get("paper") or {}).items() if v is not None}
    return {**evaluation.get("scores", {}), **paper}


def headline(evaluation: dict) -> str | None:
    """The one score a plot follows: the paper's Overall, else MATH-avg, else a group that heads
    the other tasks (rzero_micro over rzero_micro_ops1..4), else the first task."""
    scores = headline_scores(evaluation)
    for name in ("Overall", "MATH-avg"):
        if name in scores:
            return name
    groups = [t for t in scores if any(o != t and o.startswith(t + "_") for o in scores)]
    return groups[0] if groups else next(iter(scores), None)


def plots(runs: dict[Path, list[dict]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for run, rows in runs.items():
        scored = [r for r in rows if "evaluate" in r]
        main_task = headline(scored[0]["evaluate"]) if scored else None
        if main_task:
            accuracy = [100 * headline_scores(r["evaluate"]).get(main_task, float("nan")) for r in scored]
            ax.plot([r["iteration"] for r in scored], accuracy, marker="o", label=f"{Path(run).name} ({main_task})")
    ax.set(xlabel="iteration", ylabel="accuracy (%)", title="Solver accuracy by iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole iterations, never 0.5
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=100)
    written.append("scores.png")

    first = next(iter(runs.values()))
    labeled = [r for r in first if "labeled" in r]
    if labeled:
        fig, ax = plt.subplots(figsize=(6, 4))
        width = 0.8 / len(labeled)
        for i, r in enumerate(labeled):
            hist = r["labeled"]["consistency_histogram"]
            ax.bar([j + i * width for j in range(len(hist))], list(hist.values()), width=width,
                   label=f"iter {r['iteration']}")
            ax.set_xticks([j + 0.4 for j in range(len(hist))], list(hist.keys()))
        ax.set(xlabel="consistency p (votes for the majority answer)", ylabel="questions",
               title="Consistency histogram")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "consistency.png", dpi=100)
        written.append("consistency.png")

    if any(r.get("labeled", {}).get("pseudo_label_accuracy") is not None for rows in runs.values() for r in rows):
        fig, ax = plt.subplots(figsize=(6, 4))
        for run, rows in runs.items():
            pts = [(r["iteration"], r["labeled"]["kept_pseudo_label_accuracy"]) for r in rows
                   if r.get("labeled", {}).get("kept_pseudo_label_accuracy") is not None]
            if pts:
                ax.plot(*zip(*[(k, 100 * a) for k, a in pts]), marker="o", label=Path(run).name)
        ax.set(xlabel="iteration", ylabel="pseudo-label accuracy of kept questions (%)", title="Pseudo-label accuracy")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "label_accuracy.png", dpi=100)
        written.append("label_accuracy.png")
    plt.close("all")
    return written


@app.command()
def main(
    run: list[str] = typer.Option([], help="Run folder (runs/<run>) or a run on the Hub (hf://<ns>/<run>); repeat "
                                  "to put runs side by side (loop, control, upper bound).", rich_help_panel="Inputs"),
    arm: list[str] = typer.Option([], help="NAME=RUN,RUN,...: one arm's runs over several seeds (SEED=0,1,...); "
                                  "repeat per arm. Adds the mean +- two standard errors over seeds per iteration, and "
                                  "each arm against the first. Its runs also get their own tables.",
                                  rich_help_panel="Inputs"),
    output: Path = typer.Option(..., help="Folder for report.md and the PNG plots (rebuilt every time).",
                                rich_help_panel="Outputs"),
):
    """Markdown table and plots across iterations; prints the table."""
    arms: dict[str, list] = {}
    for spec in arm:
        name, _, members = spec.partition("=")
        if not name or not members:
            artifacts.fail(f"--arm {spec!r}: write NAME=RUN,RUN,... (for example loop=runs/loop-s0,runs/loop-s1).")
        arms[name] = [m if m.startswith("hf://") else Path(m) for m in members.split(",") if m]
    run = list(dict.fromkeys([r if r.startswith("hf://") else Path(r) for r in run]
                             + [m for members in arms.values() for m in members]))
    if not run:
        artifacts.fail("Nothing to report: pass --run (a run folder or hf:// run) or --arm NAME=RUN,RUN,...")
    for r in run:
        if isinstance(r, Path) and not r.is_dir():
            artifacts.fail(f"--run {r} does not exist. Pass a run folder such as runs/demo.")
    runs = {r: collect(r) for r in run}
    partial = artifacts.begin(output, overwrite=True)
    lines = ["# R-Zero run report", ""]
    readings = {}
    for r, rows in runs.items():
        text, readings[str(r)] = reading(rows)
        lines += table(r, rows) + text
    seeds, seed_summary = across_seeds({name: [runs[m] for m in members] for name, members in arms.items()})
    lines += seeds
    images = plots(runs, partial)
    lines += [f"![{name}]({name})" for name in images]
    (partial / "report.md").write_text("\n".join(lines) + "\n")
    iterations = {str(r): [x["iteration"] for x in rows] for r, rows in runs.items()}
    artifacts.finish(partial, output, dict(stage="report", runs=[str(r) for r in run], images=images,
                                           iterations=iterations, reading=readings, across_seeds=seed_summary))
    print("\n".join(line for line in lines if not line.startswith("![")))
    artifacts.log(f"report: {len(run)} run(s) -> {output / 'report.md'}")


if __name__ == "__main__":
    app()
