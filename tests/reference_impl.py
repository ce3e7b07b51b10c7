"""Plain, slow reference versions of two method-core computations, written the way the R-Zero
reference code writes them, so the fast versions in stages/rzero.py can be checked against them
(tests/test_rzero.py) and timed against them (tests/benchmarks/bench_core.py).

- `reference_repetition_penalty`: nltk sentence BLEU for every pair, a dense distance matrix and
  scikit-learn's average-linkage clustering (DESIGN.md section 1).
- `reference_group_answers`: math-verify on every pair of distinct answers, each answer parsed
  again for every comparison, in this process; no cache, no worker, no integer shortcut.

Not used by any stage: these exist only to pin the fast versions down.
"""

import warnings

import numpy as np
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from sklearn.cluster import AgglomerativeClustering

from equivalence import VERIFY_TIMEOUT_S, normalize_answer


def reference_bleu(hypothesis: str, reference: str) -> float:
    """nltk's sentence BLEU of one hypothesis against one reference, whitespace tokens, 4-gram
    uniform weights, Chen & Cherry smoothing method 1: the pair score of the penalty."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns on zero n-gram overlaps; the score is still defined
        return sentence_bleu(
            [reference.split()], hypothesis.split(), smoothing_function=SmoothingFunction().method1
        )


def reference_distance_matrix(questions: list[str]) -> np.ndarray:
    """d(i, j) = 1 - BLEU(q_i, q_j) for i < j with the earlier question as hypothesis, mirrored to
    j > i; zero diagonal."""
    b = len(questions)
    distance = np.zeros((b, b))
    for i in range(b):
        for j in range(i + 1, b):
            distance[i, j] = distance[j, i] = 1.0 - reference_bleu(questions[i], questions[j])
    return distance


def reference_repetition_penalty(questions: list[str], threshold: float = 0.5) -> list[float]:
    """r_rep(i) = |C(i)| / B with C from scikit-learn's average-linkage clustering of the BLEU
    distances, cut at `threshold` (DESIGN.md section 1, lambda = 1)."""
    b = len(questions)
    if b == 0:
        return []
    if b == 1:
        return [1.0]  # scikit-learn needs two samples; one question is its own cluster
    labels = AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="average", distance_threshold=threshold
    ).fit_predict(reference_distance_matrix(questions))
    sizes = np.bincount(labels)
    return [float(sizes[label]) / b for label in labels]


def reference_equivalent(gold: str, pred: str) -> bool:
    """math-verify on one pair, both parsed afresh (`verify(parse(gold), parse(pred))`, gold
    first, answers wrapped in \\boxed{} as the core does); any failure counts as not equivalent.
    Runs in the calling thread, so call it from the main thread (math-verify uses signal.alarm)."""
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    try:
        g = parse("\\boxed{" + gold + "}", parsing_timeout=VERIFY_TIMEOUT_S)
        p = parse("\\boxed{" + pred + "}", parsing_timeout=VERIFY_TIMEOUT_S)
        return bool(g and p and verify(g, p, timeout_seconds=VERIFY_TIMEOUT_S))
    except (Exception, TimeoutException):  # noqa: BLE001 - every failure, a timeout too, is "different"
        return False


def reference_group_answers(answers: list[str | None]) -> list[int]:
    """Group index of each answer (-1 for an empty one), from math-verify run on every pair of
    distinct normalized answers. An answer joins the group of the first earlier distinct answer
    that starts a group and that it matches (earlier answer as gold); otherwise it starts a new
    group. Groups are numbered by first occurrence. Same contract as equivalence.group_answers."""
    keys = [normalize_answer(a) for a in answers]
    distinct = list(dict.fromkeys(k for k in keys if k))
    n = len(distinct)
    same = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(i + 1, n):
            same[i, j] = reference_equivalent(distinct[i], distinct[j])
    group: dict[str, int] = {}
    starters: list[int] = []  # indices into `distinct` of the answers that started a group
    for j, key in enumerate(distinct):
        first = next((i for i in starters if same[i, j]), None)
        if first is None:
            group[key] = len(starters)
            starters.append(j)
        else:
            group[key] = group[distinct[first]]
    return [group[k] if k else -1 for k in keys]


# --- Synthetic inputs, seeded (shared by the tests and the benchmark) ------------------------------

_SETTINGS = [
    "Let $ABC$ be a triangle with $AB = {a}$, $BC = {b}$ and $CA = {c}$.",
    "A circle of radius {a} is inscribed in a right triangle.",
    "In square $PQRS$ with side length {a}, point $T$ lies on side $QR$.",
    "Consider the polynomial $P(x) = x^3 - {a}x^2 + {b}x - {c}$ with roots $r$, $s$ and $t$.",
    "A bag holds {a} red marbles, {b} blue marbles and {c} green marbles.",
    "The sequence $(a_n)$ is defined by $a_1 = {a}$ and $a_{{n+1}} = {b}a_n + {c}$.",
    "Each vertex of a regular {a}-gon is colored with one of {d} colors.",
    "A committee is chosen from {a} women and {b} men.",
    "Alice and Bob play a game starting from a pile of {a} stones.",
    "Let $f$ be a function from the positive integers to the positive integers.",
    "A rectangular box has integer edge lengths and volume {a}{b}.",
    "Let $z$ be a complex number with $|z| = {a}$.",
    "A train leaves a station at {a} km/h and another follows it {b} hours later.",
    "Consider all {a}-digit positive integers written in base {d}.",
    "Points $A$, $B$, $C$, $D$ lie on a circle in that order.",
    "A fair {a}-sided die is rolled repeatedly.",
    "Let $S$ be the set of lattice points $(x, y)$ with $|x| + |y| \\le {a}$.",
    "An arithmetic progression has first term {a} and common difference {b}.",
    "A frog starts at the origin of the number line and jumps one unit left or right each second.",
    "Let $n$ be a positive integer such that $n^2 + {a}n + {b}$ is a perfect square.",
]
_CONDITIONS = [
    "The angle bisector from $A$ meets the opposite side at $D$.",
    "Its hypotenuse has length {b}.", "Moreover $QT = {b}$ and $TR = {c}$.",
    "No two adjacent vertices share a color.", "At least two members of each group must serve.",
    "Three marbles are drawn without replacement.", "On each turn a player removes between 1 and {b} stones.",
    "It satisfies $f(f(n)) = n + {b}$ for every $n$.", "The surface area of the box is a multiple of {c}.",
    "In addition $|z - {b}| = {c}$.", "The chords $AC$ and $BD$ meet at right angles at a point $E$.",
    "Suppose further that $AE = {b}$, $EC = {c}$ and $BE = {d}$.", "The game ends as soon as a six appears.",
    "Only points with $x + y$ odd are counted.", "The digits must strictly increase from left to right.",
    "The sum of its first $n$ terms exceeds {c}{d}.", "The frog stops the first time it reaches {b} or $-{c}$.",
    "Whoever takes the last stone wins.", "The product of the roots is negative.",
    "Assume that $r^2 + s^2 + t^2 = {d}$.", "The second train travels at {c} km/h.",
    "Rotations of a coloring are considered the same.", "Every answer must be given modulo {d}.",
    "Exactly {d} of the chosen numbers are even.",
]
_ASKS = [
    "Find the length of $BD$.", "Compute the perimeter of the triangle.", "What is the area of triangle $PTS$?",
    "Compute $r^2 + s^2 + t^2$.", "What is the probability that exactly two of them are red?",
    "Find the remainder when $a_{{{d}}}$ is divided by {c}.", "How many colorings are possible?",
    "In how many ways can this be done?", "How many starting pile sizes below {c} are losing for the first player?",
    "Determine $f({d})$.", "How many such boxes are there?", "Find the real part of $z$.",
    "After how many hours does the second train catch up?", "How many such integers are there?",
    "Find the radius of the circle.", "What is the expected number of rolls?", "How many points does $S$ contain?",
    "What is the smallest such $n$?", "What is the probability that the frog reaches {b} first?",
    "Find the sum of all such $n$ below {c}{d}.",
]
_EXTRAS = [
    "Express your answer as a common fraction.", "Give your answer in simplest radical form.",
    "All quantities are positive integers.", "Round your answer to the nearest integer if necessary.",
    "Justify that your configuration is the only one possible.",
]


def math_question(rng) -> str:
    """One competition-style question of 15 to 60 whitespace tokens: a setting, one to three
    conditions and a question, from pools with number slots."""
    nums = {k: rng.randint(2, 99) for k in "abcd"}
    parts = [rng.choice(_SETTINGS)] + rng.sample(_CONDITIONS, rng.randint(1, 3)) + [rng.choice(_ASKS)]
    if rng.random() < 0.3:
        parts.append(rng.choice(_EXTRAS))
    tokens = " ".join(parts).format(**nums).split()
    while len(tokens) < 15:
        tokens += rng.choice(_EXTRAS).split()
    return " ".join(tokens[:60])


def near_duplicate(rng, question: str) -> str:
    """`question` with one to three tokens changed, dropped or inserted."""
    tokens = question.split()
    for _ in range(rng.randint(1, 3)):
        k = rng.randrange(len(tokens))
        move = rng.random()
        if move < 0.4:
            tokens[k] = str(rng.randint(2, 999))
        elif move < 0.7 and len(tokens) > 15:
            del tokens[k]
        elif len(tokens) < 60:
            tokens.insert(k, rng.choice(["also", "then", "exactly", "real", "positive"]))
    return " ".join(tokens)


def math_questions(rng, b: int, duplicate_rate: float = 0.1, near_rate: float = 0.2) -> list[str]:
    """A batch like the Challenger's: mostly fresh questions, some exact and near repeats of
    earlier ones."""
    out: list[str] = []
    for _ in range(b):
        roll = rng.random()
        if out and roll < duplicate_rate:
            out.append(rng.choice(out))
        elif out and roll < duplicate_rate + near_rate:
            out.append(near_duplicate(rng, rng.choice(out)))
        else:
            out.append(math_question(rng))
    return out


def arithmetic_question(rng) -> str:
    """A micro-world question: 'What is 4 * 7 + 5?' with one to four operations."""
    expr = str(rng.randint(0, 9))
    for _ in range(rng.randint(1, 4)):
        expr += f" {rng.choice('+-*')} {rng.randint(0, 9)}"
    return f"{rng.choice(['What is', 'Compute', 'Calculate'])} {expr}?"


def _answer_forms(rng, kind: str, value: int, other: int) -> list[str]:
    """Several ways a Solver might write one answer of `kind` built from two small integers."""
    if kind == "integer":
        return [str(value), f"{value}", f"{value}", f"${value}$", f"{value}.", f"+{value}", f"{value}.0",
                f"\\text{{{value}}}", f"{value:03d}" if value >= 0 else str(value)]
    if kind == "fraction":  # terminating decimals, so the decimal form is the same number
        num, den = value, rng.choice([2, 4, 5, 8, 10, 20, 25])
        return [f"\\frac{{{num}}}{{{den}}}", f"\\dfrac{{{num}}}{{{den}}}", f"{num}/{den}", f"{num / den:g}",
                f"\\tfrac{{{num}}}{{{den}}}", f"{num}/{den}"]
    if kind == "radical":
        return [f"{value}\\sqrt{{{other}}}", f"{value} \\sqrt{{{other}}}", f"\\sqrt{{{value * value * other}}}",
                f"{value}\\sqrt{{{other}}}"]
    if kind == "pi":
        return [f"\\frac{{{value}\\pi}}{{{other}}}", f"{value}\\pi/{other}", f"\\frac{{{value}}}{{{other}}}\\pi",
                f"\\dfrac{{{value}\\pi}}{{{other}}}"]
    if kind == "polynomial":
        return [f"x^2 + {value}x + {other}", f"x^{{2}}+{value}x+{other}", f"{other} + {value}x + x^2",
                f"x^2+{value}x+{other}"]
    if kind == "interval":
        return [f"({value}, {value + other})", f"\\left({value}, {value + other}\\right)",
                f"({value},{value + other})"]
    return [rng.choice(["no solution", "\\text{no solution}", "None of the above", "cannot be determined",
                        "The answer is", "undefined", "\\emptyset", "I am not sure"])]


ANSWER_KINDS = ["integer"] * 10 + ["fraction"] * 3 + ["radical", "pi", "polynomial", "interval", "junk"] * 1


def solver_answers(rng, m: int = 10, kind: str | None = None) -> list[str | None]:
    """m answers to one question as a sampled Solver writes them: the right answer in several
    forms, scattered wrong answers (some in the same forms), junk, and missing boxes (None)."""
    kind = kind or rng.choice(ANSWER_KINDS)
    value, other = rng.randint(1, 60), rng.choice([2, 3, 5, 6, 7])
    p_right = rng.choice([0.2, 0.4, 0.5, 0.6, 0.8, 1.0])
    out: list[str | None] = []
    for _ in range(m):
        roll = rng.random()
        if roll < 0.08:
            out.append(rng.choice([None, "", " "]))
        elif roll < 0.08 + p_right * 0.92:
            out.append(rng.choice(_answer_forms(rng, kind, value, other)))
        else:
            wrong = value + rng.choice([-3, -2, -1, 1, 2, 5, 10])
            out.append(rng.choice(_answer_forms(rng, rng.choice([kind, kind, "integer", "junk"]), wrong, other)))
    return out
