"""Benchmark of the method core's two hot paths against the plain reference versions.

    python tests/benchmarks/bench_core.py            # full run, a few minutes on 2 cores
    python tests/benchmarks/bench_core.py --quick    # smaller samples, about a minute

(a) repetition penalty: fast (sparse n-gram products + scipy linkage) vs plain (nltk sentence BLEU
    per pair + scikit-learn clustering), B = 256 ... 2048 questions of 15-60 tokens with exact
    and near repeats. The plain one is timed in full at B = 256 and its penalties asserted equal
    to the fast ones; above that its BLEU part is timed on a random sample of pairs and scaled to
    all B(B-1)/2 pairs, the fast BLEU asserted equal to nltk's on that sample, and its clustering
    (scikit-learn on the fast distances) timed in full, its penalties asserted equal.
(b) majority vote: answers/s of rzero.majority_votes (as the stages call it, over its worker processes)
    over 1,000 questions x 10 answers, against
    math-verify on every pair of distinct answers (reference_group_answers), partitions asserted
    equal. Two answer mixes: competition-style forms, and the micro-world's integers.
(c) worst case: a vote of 10 answers, 5 of them adversarial, and a pair check over adversarial
    answers, wall time with a fresh worker and nothing remembered, and what equivalence counted.
Targets (from the brief): fast penalty >= 100x plain and < 2 s at B = 2048; vote >= 2,000 answers/s
on the competition mix; the adversarial vote <= 5 s.
"""

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "stages"), str(ROOT / "tests")]

import numpy as np  # noqa: E402
import equivalence  # noqa: E402
import microworld  # noqa: E402
import rzero  # noqa: E402
from reference_impl import (  # noqa: E402
    arithmetic_question,
    math_questions,
    reference_bleu,
    reference_group_answers,
    reference_repetition_penalty,
    solver_answers,
)


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def plain_penalty_estimate(questions: list[str], fast: list[float], sample_pairs: int,
                           rng: random.Random) -> tuple[float, float]:
    """Seconds the plain penalty would take: nltk BLEU per pair, timed on a sample and scaled,
    plus scikit-learn's clustering on a full matrix (timed for real); and the largest difference
    from the fast version: its BLEU against nltk's on the sampled pairs, its penalties against
    those of scikit-learn's clusters."""
    from sklearn.cluster import AgglomerativeClustering

    b = len(questions)
    pairs = [tuple(sorted(rng.sample(range(b), 2))) for _ in range(sample_pairs)]
    plain_bleu, t_sample = timed(lambda: [reference_bleu(questions[i], questions[j]) for i, j in pairs])
    bleu = rzero.pairwise_bleu(questions)
    diff = max(abs(bleu[i, j] - p) for (i, j), p in zip(pairs, plain_bleu))
    distance = np.triu(1.0 - bleu, 1) + np.triu(1.0 - bleu, 1).T
    clustering = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                                         distance_threshold=0.5)
    labels, t_cluster = timed(clustering.fit_predict, distance)
    sizes = np.bincount(labels)
    diff = max(diff, max(abs(f - sizes[label] / b) for f, label in zip(fast, labels)))
    return t_sample / sample_pairs * (b * (b - 1) / 2) + t_cluster, diff


def bench_penalty(quick: bool) -> list[tuple]:
    rows = []
    rng = random.Random(2024)
    for b in (256, 512, 1024, 2048):
        questions = math_questions(random.Random(b), b, duplicate_rate=0.1, near_rate=0.2)
        runs = [timed(rzero.repetition_penalty, questions) for _ in range(3)]  # best of 3: a busy box
        fast, t_fast = runs[0][0], min(t for _, t in runs)
        if b == 256:
            plain, t_plain = timed(reference_repetition_penalty, questions)
            how = "full, penalties compared"
            diff = max(abs(f - p) for f, p in zip(fast, plain))
        else:
            sample = 2000 if quick else 20000
            t_plain, diff = plain_penalty_estimate(questions, fast, sample, rng)
            how = f"BLEU timed and compared on {sample} sampled pairs, clustering in full"
        assert diff <= 1e-9, f"B = {b}: the fast penalty differs from the plain one by {diff:.1e}"
        lengths = [len(q.split()) for q in questions]
        repeated = sum(p > 1.5 / b for p in fast)  # questions in a cluster of two or more
        rows.append((b, f"{min(lengths)}-{max(lengths)}", repeated, t_fast, t_plain, t_plain / t_fast, how, diff))
    return rows


_MICRO_JUNK = ["I don't know", "\\text{undefined}", "x", "?"]


def micro_world_answers(rng: random.Random, m: int = 10) -> list[str | None]:
    """m answers to a micro-world question: the true value (integers, sometimes a fraction in two
    forms), nearby wrong integers, a little junk and some missing boxes."""
    truth = microworld.evaluate_arithmetic(arithmetic_question(rng).replace("*", rng.choice(["*", "*", "/"])))
    truth = truth if truth is not None else microworld.evaluate_arithmetic("What is 1 + 1?")
    p_right = rng.choice([0.2, 0.4, 0.5, 0.6, 0.8, 1.0])
    out: list[str | None] = []
    for _ in range(m):
        roll = rng.random()
        if roll < 0.06:
            out.append(rng.choice([None, ""]))
        elif roll < 0.09:
            out.append(rng.choice(_MICRO_JUNK))
        elif roll < 0.09 + p_right * 0.91:
            text = microworld.format_number(truth)
            if truth.denominator != 1 and rng.random() < 0.5:
                text = f"\\frac{{{truth.numerator}}}{{{truth.denominator}}}"
            out.append(text)
        else:
            out.append(str(int(truth) + rng.choice([-10, -2, -1, 1, 2, 3, 10])))
    return out


def bench_vote(quick: bool) -> list[tuple]:
    rows = []
    n = 1000
    n_reference = 100 if quick else n
    warm = [["1/2", "0.5", "x+1", "no", "3", None], ["(1,2)", "\\sqrt{2}", "2\\pi", "7.0", "7"]]
    rzero.majority_votes(warm * 2)  # start the workers and warm both sides' parsers on unrelated answers
    for answers in warm:
        reference_group_answers(answers)
    for name, make in (("competition mix", solver_answers), ("micro-world mix", micro_world_answers)):
        rng = random.Random(5)
        data = [make(rng) for _ in range(n)]
        total = sum(len(a) for a in data)
        votes, t_core = timed(rzero.majority_votes, data)  # as the stages call it: over the worker processes
        groups, _ = timed(lambda: [equivalence.group_answers(a) for a in data[:n_reference]])
        reference, t_ref = timed(lambda: [reference_group_answers(a) for a in data[:n_reference]])
        mismatches = sum(g != r for g, r in zip(groups, reference))
        assert mismatches == 0, f"{name}: {mismatches} partitions differ from the pairwise reference"
        n_ref_answers = sum(len(a) for a in data[:n_reference])
        distinct = len({equivalence.normalize_answer(x) for a in data for x in a} - {""})
        rows.append((name, n, total, distinct, t_core, total / t_core, n_reference, t_ref,
                     n_ref_answers / t_ref, mismatches))
        assert all(0.0 <= p <= 1.0 for _, p in votes)
    return rows


def bench_adversarial() -> list[tuple]:
    tower = "10^{10^{10^{10}}}"
    parens = "(" * 25000 + "1" + ")" * 25000
    fracs = "\\frac{1}{2+" * 4000 + "1" + "}" * 4000
    answers = [tower, "1", parens, "1.0", fracs, "(10^{10^{10}})!", "x^{10000000}", "2", "\\frac{2}{2}", None]
    equivalence.stop_workers()  # a fresh worker: nothing cached from earlier runs ...
    equivalence.forget()  # ... and nothing remembered
    before = equivalence.failures()
    (label, p), t_vote = timed(rzero.majority_vote, answers)
    pairs = [(a, "1") for a in (tower, parens, fracs, "(10^{10^{10}})!", "9^{9^{9}}")]
    verdicts, t_pairs = timed(equivalence.equivalent_pairs, pairs)
    counts = {k: v - before[k] for k, v in equivalence.failures().items()}
    return [("vote over 10 answers (5 adversarial)", t_vote, f"goal <= 5 s | label {label!r}, p = {p:.2f}"),
            ("5 adversarial pairs vs '1'", t_pairs, f"verdicts {verdicts}"),
            ("counted by equivalence", None, ", ".join(f"{k} {v}" for k, v in counts.items()))]


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo, or the platform's guess."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples (about a minute)")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"bench_core | python {platform.python_version()} | {cpu_model()} | {os.cpu_count()} cpus, "
          f"{equivalence.WORKERS} usable = math-verify workers | load {load:.2f} | {'quick' if args.quick else 'full'}")

    print("\n(a) repetition penalty (times in s; fast = best of 3 runs, plain = one run)")
    print(f"{'B':>5} {'tokens':>7} {'repeated':>8} {'fast':>8} {'plain':>9} {'ratio':>8} {'max|diff|':>9}  plain timed")
    for b, lengths, repeated, t_fast, t_plain, ratio, how, diff in bench_penalty(args.quick):
        print(f"{b:>5} {lengths:>7} {repeated:>8} {t_fast:>8.3f} {t_plain:>9.1f} {ratio:>7.0f}x {diff:>9.1e}  {how}")

    print(f"\n(b) majority vote, 10 answers per question, over {equivalence.WORKERS} worker processes "
          "(goal: >= 2,000 answers/s on the competition mix)")
    print(f"{'mix':<16} {'questions':>9} {'answers':>7} {'distinct':>8} {'core s':>7} {'core ans/s':>10} "
          f"{'ref qs':>6} {'ref s':>7} {'ref ans/s':>9} {'partition diffs':>15}")
    rows = bench_vote(args.quick)
    for name, n, total, distinct, t_core, rate, n_ref, t_ref, ref_rate, diffs in rows:
        print(f"{name:<16} {n:>9} {total:>7} {distinct:>8} {t_core:>7.2f} {rate:>10.0f} {n_ref:>6} {t_ref:>7.1f} "
              f"{ref_rate:>9.0f} {diffs:>15}")
    rate = rows[0][5]
    print(f"competition mix: {rate:.0f} answers/s against the goal of 2,000: {'met' if rate >= 2000 else 'MISSED'}")

    print("\n(c) worst case, fresh worker, nothing remembered")
    for name, seconds, what in bench_adversarial():
        print(f"{name:<40} {'' if seconds is None else f'{seconds:6.2f} s':>8}  {what}")


if __name__ == "__main__":
    main()
