"""Table tests for answer equivalence (stages/equivalence.py): normalization, the cheap paths, the
screen of pathological answers, the bounded math-verify worker and its failure counts, grouping
checked against math-verify on every pair (tests/reference_impl.py).

math-verify runs in worker processes shared by the whole session (started on first use, ~1-2 s);
the tests that kill one check that the next call starts a fresh one. Counts are read as the
difference of `equivalence.failures()` around a call, so tests need no particular order.
"""

import os
import random
import threading
import time
from collections import Counter
from fractions import Fraction

import pytest
import equivalence
import rzero
from reference_impl import reference_equivalent, reference_group_answers, solver_answers


@pytest.fixture(autouse=True)
def _nothing_learned():
    """Each test starts with nothing remembered or learned by this process (workers keep their caches)."""
    equivalence.forget()


# --- Normalization ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, expected",
    [
        (None, ""),  # no answer
        ("", ""),  # empty answer
        ("   ", ""),  # blank answer
        (" 7 ", "7"),  # outer spaces
        ("$7$", "7"),  # inline math dollars
        ("$$ 7 $$", "7"),  # display math dollars
        ("+007", "7"),  # sign and leading zeros of an integer
        ("-0", "0"),  # negative zero is zero
        ("-12", "-12"),  # a negative integer stays negative
        ("3.", "3"),  # a sentence's full stop
        ("007.5", "007.5"),  # decimals are left to math-verify
        ("1234567890123456", "1234567890123456"),  # 16 digits: not canonicalized (past the fast path)
        ("\\text{7}", "7"),  # \text around the whole answer
        ("\\text{ no  solution }", "nosolution"),  # spaces inside go too
        ("\\text{a}\\text{b}", "\\text{a}\\text{b}"),  # two \text blocks are not one wrapper
        ("\\text{a{b}c}", "a{b}c"),  # nested braces inside the wrapper
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),  # \dfrac is \frac
        ("\\tfrac12", "\\frac12"),  # \tfrac is \frac
        ("\\left( 1, 2 \\right)", "(1,2)"),  # \left and \right are only sizing
        ("x \\rightarrow 0", "x\\rightarrow0"),  # ... but \rightarrow is an arrow
        ("x \\leftarrow 0", "x\\leftarrow0"),  # ... and so is \leftarrow
        ("1\\,000", "1000"),  # thin spaces
        ("x \\; + \\! 1", "x+1"),  # other spacing commands
    ],
)
def test_normalize_answer(answer, expected):
    assert equivalence.normalize_answer(answer) == expected


# --- Equivalence --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gold, pred, expected",
    [
        ("\\frac{1}{2}", "0.5", True),  # fraction vs decimal
        ("0.5", "\\frac{1}{2}", True),  # ... either way round
        ("\\frac{1}{2}", "1/2", True),  # latex fraction vs slash
        ("1/2", "0.5", True),  # slash vs decimal
        ("\\dfrac{3}{4}", "0.75", True),  # \dfrac form
        ("7", "7", True),  # same integer
        ("+007", "7", True),  # same integer written differently (string fast path)
        ("7", "7.0", True),  # integer vs decimal
        ("7", "8", False),  # different integers (integer fast path)
        ("-3", "3", False),  # sign matters
        ("x+1", "1+x", True),  # commuted sum
        ("(x+1)^2", "x^2+2x+1", True),  # expanded square
        ("x+1", "x+2", False),  # different expressions
        ("2\\sqrt{3}", "\\sqrt{12}", True),  # radicals
        ("\\frac{19\\pi}{2}", "9.5\\pi", True),  # constants
        ("4.5e33", "4.5 \\times 10^{33}", True),  # e-notation (Minerva's golds) is a power of ten, not Euler's e
        ("4.5 \\times 10^{33}", "4.5e33", True),  # ... either way round
        ("4.5e33", "4.6e33", False),  # ... and different mantissas differ
        ("1e-3", "0.001", True),  # negative exponent
        ("no solution", "37", False),  # junk text vs a number
        ("hello", "world", False),  # junk vs junk
        ("\\text{7}", "7", True),  # \text wrapper
        ("", "", False),  # empty answers are never equivalent
        (None, None, False),  # nor are missing ones
        ("7", None, False),  # a missing prediction
        ("", "7", False),  # an empty gold
        ("  ", " ", False),  # blank is empty
    ],
)
def test_is_equivalent(gold, pred, expected):
    assert equivalence.is_equivalent(gold, pred) is expected


def test_equivalent_pairs_keeps_order():
    # one call, several kinds of pair: results come back in input order
    pairs = [("1", "1"), ("\\frac{1}{2}", "0.5"), ("2", "3"), (None, "1"), ("x+1", "1+x"), ("a", "b")]
    assert equivalence.equivalent_pairs(pairs) == [True, True, False, False, True, False]
    assert equivalence.equivalent_pairs([]) == []


def test_is_equivalent_from_other_threads():
    # the point of the worker: math-verify's signal.alarm only works in a main thread, so the
    # bounded check must work from a trainer's or server's thread, also from several at once
    cases = [("\\frac{1}{2}", "0.5", True), ("x+1", "1+x", True), ("3", "4", False), ("1/3", "0.25", False)]
    results: dict = {}

    def check(k: int) -> None:
        gold, pred, _ = cases[k % len(cases)]
        results[k] = equivalence.is_equivalent(gold, pred)

    threads = [threading.Thread(target=check, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {k: cases[k % len(cases)][2] for k in range(8)}


# Adversarial answers: the screen keeps them from math-verify; where it cannot tell, math-verify's
# own timeouts or the worker deadline bound them, and the answer or pair is remembered.
_TOWER = "10^{10^{10^{10}}}"
_PARENS = "(" * 25000 + "1" + ")" * 25000  # 50 kB, and equal to 1 if it could be parsed
_FRACS = "\\frac{1}{2+" * 4000 + "1" + "}" * 4000  # 48 kB nested continued fraction
_MATRIX = ("\\begin{pmatrix}" + "\\\\".join("&".join(f"\\frac{{{i + 1}}}{{{j + 2}}}" for j in range(6)) for i in range(6))
           + "\\end{pmatrix}")  # a 6 x 6 matrix of fractions: 470 characters


def _delta(before: dict) -> dict:
    """What `equivalence.failures()` counted since `before`, the unchanged counts left out."""
    now = equivalence.failures()
    return {key: now[key] - before[key] for key in now if now[key] != before[key]}


@pytest.fixture
def unscreened(monkeypatch):
    """The screen off and nothing remembered, before and after: for the bounds behind the screen."""
    equivalence.forget()
    monkeypatch.setattr(equivalence, "screen", lambda answer: None)
    yield
    equivalence.forget()


@pytest.mark.parametrize(
    "answer, reason",
    [
        (_TOWER, "power"),  # a tower of powers of ten: 10^(10^10) digits and more
        ("9^{9^{9}}", "power"),  # a short tower: 370 million digits
        ("10^{10000000}", "power"),  # one power of ten million digits
        ("10^{-10^{10}}", "power"),  # tiny, but as an exact rational just as long
        ("1.5^{10^{7}}", "power"),  # a decimal base
        ("x^{10^{10^{10}}}", "power"),  # a tower in the exponent of a symbol
        ("\\sin(10^{10^{10}})", "power"),  # ... or inside a function
        ("(10^{10^{10}})!", "power"),  # the factorial of a tower: the tower already tells
        ("(10^{10})!", "factorial"),  # the factorial of ten billion
        ("{10^{6}}!", "factorial"),  # ... of a million, braced
        ("200000!", "factorial"),  # a literal past MAX_FACTORIAL
        (_PARENS, "length"),  # 50 kB (and 25,000 deep): length is told first
        (_FRACS, "length"),  # 48 kB of continued fraction
        ("x+" * 500 + "1", "length"),  # 1,001 characters of an ordinary sum
        ("(" * 13 + "1" + ")" * 13, "nesting"),  # short, but 13 deep: math-verify's parse time explodes
        ("\\frac{1}{2+" * 13 + "1" + "}" * 13, "nesting"),  # a continued fraction 13 braces deep
        ("[(\\{" * 5 + "1" + "\\})]" * 5, "nesting"),  # the three kinds of bracket count together
    ],
)
def test_screen_finds_pathological_answers(answer, reason):
    assert equivalence.screen(equivalence.normalize_answer(answer)) == reason


@pytest.mark.parametrize(
    "answer",
    [
        "(1,2]",  # a half-open interval
        "[0,\\infty)",  # an unbounded one
        "(-\\infty,-1)\\cup(1,\\infty)",  # a union of intervals
        "x^{2}+2x+1",  # a polynomial
        "3x^{3}-\\frac{1}{2}x+7",  # ... with a fraction coefficient
        "x_{1}^{2}+x_{2}^{2}",  # subscripts and powers
        "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",  # a matrix
        _MATRIX,  # a large matrix: 470 characters, far below MAX_LENGTH
        "\\left[\\begin{array}{cc}\\frac{1}{2}&0\\\\0&\\frac{1}{3}\\end{array}\\right]",  # an array matrix
        "-\\frac{17}{64}",  # a fraction
        "\\frac{\\sqrt{3}}{2}",  # a radical over a number
        "2\\sqrt[3]{5}",  # a cube root
        "\\sqrt{\\frac{\\sqrt{2}+1}{2}}",  # nested radicals: 4 deep
        "\\left(\\left(\\frac{1}{2}\\right)^{2}\\right)^{3}",  # nested powers of a fraction
        "f(x)=((x+1)^{2}+1)^{3}",  # a function, nested 4 deep
        "\\frac{19\\pi}{2}",  # pi
        "2\\pi i",  # pi and i
        "\\{1,2,3\\}",  # a set
        "\\{(1,2),(3,4)\\}",  # a set of pairs
        "\\emptyset",  # the empty set
        "2^{2024}",  # a large power: 610 digits
        "10^{100}",  # a googol
        "3^{100}-1",  # a power in a sum
        "2^{2^{2^{2}}}",  # a small tower: 65536
        "10^{10^{6}}",  # at the bound: a million digits (math-verify compares it in 10 ms)
        "0.5^{100}",  # a decimal base
        "e^{x^{2}}",  # a tower over a symbol
        "4.5\\times10^{33}",  # scientific notation
        "100000!",  # the largest factorial let through (0.1 s)
        "10!",  # a small factorial
        "1!+2!+3!",  # several
        "\\binom{10}{3}",  # a binomial
        "\\text{no solution}",  # words
    ],
)
def test_screen_passes_ordinary_answers(answer):
    assert equivalence.screen(equivalence.normalize_answer(answer)) is None


@pytest.mark.parametrize(
    "gold, pred",
    [
        (_TOWER, "1"),  # a power tower that would never finish evaluating
        ("1", _PARENS),  # 50 kB of nesting as the prediction
        (_FRACS, "1"),  # deeply nested \frac as the gold
        ("(10^{10^{10}})!", "1"),  # a factorial of a huge number
    ],
)
def test_adversarial_answers_are_bounded_and_not_equivalent(gold, pred):
    start = time.monotonic()
    assert equivalence.is_equivalent(gold, pred) is False
    assert time.monotonic() - start < 15


def test_adversarial_answers_in_a_vote():
    # the adversarial answers get groups of their own, screened without math-verify; the rest are
    # grouped as usual, in time
    before = equivalence.failures()
    start = time.monotonic()
    groups = equivalence.group_answers(["1", _PARENS, "1.0", _TOWER, "\\frac{2}{2}", "2"])
    assert groups == [0, 1, 0, 2, 0, 3]
    assert time.monotonic() - start < 30
    assert _delta(before) == {"screened": 2}  # the rest are plain numbers: math-verify not asked


def test_screened_answers_are_equal_only_to_themselves():
    # "different from everything but an identical string": the same tower twice is one group
    before = equivalence.failures()
    assert equivalence.group_answers([_TOWER, "1", _TOWER + " ", "9^{9^{9}}", "x", "9^{9^{9}}"]) == [0, 1, 0, 2, 3, 2]
    assert equivalence.is_equivalent(_TOWER, " " + _TOWER) is True  # equal normalized strings
    assert equivalence.is_equivalent("9^{9^{9}}", "9^{387420489}") is False  # equal, but screened
    assert _delta(before) == {"checked": 2, "screened": 3}  # '1' and 'x' went to math-verify


def test_a_normal_vote_counts_no_failure():
    # every distinct answer checked by math-verify, nothing failed, nothing screened
    before = equivalence.failures()
    groups = equivalence.group_answers(["x+1", "1+x", "(1,2)", "\\frac{\\pi}{2}", "no solution", _MATRIX])
    assert groups == [0, 0, 1, 2, 3, 4]
    assert _delta(before) == {"checked": 6}


@pytest.mark.parametrize(
    "counts, expected",
    [
        # a clean run
        ({"checked": 10, "failed": 0, "timeouts": 0, "math_verify_timeouts": 0, "worker_deaths": 0, "screened": 0},
         "verifier timeouts 0 | worker deaths 0 | screened 0"),
        # both kinds of timeout add up
        ({"checked": 10, "failed": 3, "timeouts": 1, "math_verify_timeouts": 2, "worker_deaths": 0, "screened": 4},
         "verifier timeouts 3 | worker deaths 0 | screened 4"),
        # every check failed: said loudly, first
        ({"checked": 5, "failed": 5, "timeouts": 0, "math_verify_timeouts": 0, "worker_deaths": 5, "screened": 0},
         "VERIFIER FAILED ON ALL 5 CHECKS (all counted as not equivalent) | verifier timeouts 0 | worker deaths 5 | screened 0"),
        # nothing checked (plain numbers only): nothing failed either
        ({"checked": 0, "failed": 0, "timeouts": 0, "math_verify_timeouts": 0, "worker_deaths": 0, "screened": 0},
         "verifier timeouts 0 | worker deaths 0 | screened 0"),
    ],
)
def test_failure_note(counts, expected):
    assert equivalence.failure_note(counts) == expected


def test_failures_is_a_copy_with_every_key():
    counts = equivalence.failures()
    assert tuple(counts) == equivalence.FAILURE_KEYS
    counts["timeouts"] += 100
    assert equivalence.failures()["timeouts"] == counts["timeouts"] - 100  # the module's counts untouched


def test_workers_follow_the_cpus():
    # one worker process per CPU this process may run on, at least one
    assert equivalence.WORKERS == max(1, len(os.sched_getaffinity(0)))


def test_timed_out_check_counts_as_different_and_the_worker_restarts(monkeypatch):
    equivalence.forget()
    assert equivalence.is_equivalent("2x", "x+x")  # worker up (plain numbers never reach it)
    old = equivalence.worker_process(0).pid
    before = equivalence.failures()
    monkeypatch.setattr(equivalence, "DEADLINE_S", 0.001)
    assert equivalence.is_equivalent("(y+3)^2", "y^2+6y+9") is False  # true, but out of time
    assert equivalence.worker_process(0) is None  # the late worker was killed
    assert _delta(before) == {"checked": 1, "failed": 1, "timeouts": 1}  # counted, as a failure
    monkeypatch.setattr(equivalence, "DEADLINE_S", 5.0)
    assert equivalence.is_equivalent("(y+3)^2", "y^2+6y+9") is False  # remembered: not asked again
    assert equivalence.worker_process(0) is None  # ... so no worker was needed
    equivalence.forget()
    assert equivalence.is_equivalent("(y+3)^2", "y^2+6y+9") is True  # forgotten: a fresh worker answers
    assert equivalence.worker_process(0).pid != old


def test_one_late_item_does_not_stop_the_rest(monkeypatch, unscreened):
    # a batch: the item past its deadline is False, the next one is answered by a fresh worker
    equivalence.is_equivalent("x+1", "1+x")
    monkeypatch.setattr(equivalence, "DEADLINE_S", 1.5)  # below math-verify's own 2 s timeout
    before = equivalence.failures()
    start = time.monotonic()
    assert equivalence.equivalent_pairs([(_TOWER + "+1", "1"), ("x+x", "2x")]) == [False, True]
    assert time.monotonic() - start < 15
    assert _delta(before) == {"checked": 2, "failed": 1, "timeouts": 1}


def test_deadline_bounds_one_comparison_not_a_whole_item(monkeypatch, unscreened):
    # in a vote each parse and comparison has its own deadline, so one comparison that hangs in C
    # code (x^10000000 against a factorial of a huge number) is cut after DEADLINE_S, not after
    # DEADLINE_S times the number of groups so far
    equivalence.is_equivalent("x+1", "1+x")
    old = equivalence.worker_process(0).pid
    monkeypatch.setattr(equivalence, "DEADLINE_S", 2.0)
    before = equivalence.failures()
    start = time.monotonic()
    groups = equivalence.group_answers(["(10^{10^{10}})!", "a", "b", "c", "d", "g", "x^{10000000}", "f", "a"])
    assert groups == [0, 1, 2, 3, 4, 5, 6, 7, 1]  # the cut answer alone, the rest as usual
    assert time.monotonic() - start < 12
    assert equivalence.worker_process(0).pid != old  # a fresh worker took over after the hung one
    assert _delta(before)["timeouts"] == 1


def test_an_unparseable_answer_costs_its_timeout_once(unscreened):
    # math-verify's parse times out on 50 kB of parentheses: the parent remembers the answer, so
    # it is not parsed again, not even by a fresh worker
    before = equivalence.failures()
    assert equivalence.is_equivalent(_PARENS + " ", "1") is False  # parsed (2 s timeout), remembered
    equivalence.stop_workers()  # a restart loses the worker's cache, not the parent's memory
    assert equivalence.is_equivalent(_PARENS + " ", "2") is False
    assert equivalence.group_answers(["x", _PARENS, "y"]) == [0, 1, 2]
    delta = _delta(before)
    assert delta["math_verify_timeouts"] + delta.get("timeouts", 0) == 1  # its bound, once
    assert delta["screened"] == 2  # then known without math-verify, twice


def test_a_recurring_pathological_answer_costs_its_deadline_once(monkeypatch, unscreened):
    # the same answer in four questions: the first pays the deadline (and a worker restart), the
    # other three know it; the verdicts are the same in all four
    monkeypatch.setattr(equivalence, "DEADLINE_S", 1.0)  # below math-verify's 2 s: the deadline cuts
    before = equivalence.failures()
    votes = [equivalence.group_answers(["x+1", _PARENS, "x+2"]) for _ in range(4)]
    assert votes == [[0, 1, 2]] * 4
    delta = _delta(before)
    assert delta["timeouts"] == 1 and delta.get("worker_deaths", 0) == 0
    assert delta["screened"] == 3


def test_an_answer_that_fails_against_two_partners_is_remembered(monkeypatch, unscreened):
    # a tower that parses but whose comparisons never end: each comparison that blows its bound
    # is a strike against both sides; at STRIKES = 2 the tower is remembered, the plain numbers never
    assert equivalence.STRIKES == 2
    monkeypatch.setattr(equivalence, "DEADLINE_S", 2.5)
    before = equivalence.failures()
    for partner in ("1", "2", "3", "4"):
        assert equivalence.group_answers([partner, _TOWER]) == [0, 1]
    delta = _delta(before)
    assert delta.get("timeouts", 0) + delta.get("math_verify_timeouts", 0) == 2  # two strikes ...
    assert delta["screened"] == 2  # ... then remembered
    assert equivalence.is_equivalent("1", "1.0") is True  # the partners were not


def test_a_worker_that_died_between_calls_is_replaced():
    # killed from outside (e.g. out of memory): the next call starts a new one instead of failing,
    # and the death is counted
    assert equivalence.is_equivalent("2x", "x+x")
    process = equivalence.worker_process(0)
    process.kill()
    process.join()
    before = equivalence.failures()
    assert equivalence.is_equivalent("3x", "x+2x")  # a pair no worker has answered yet
    assert equivalence.worker_process(0) is not process
    assert _delta(before) == {"checked": 1, "worker_deaths": 1}


def test_a_worker_that_dies_during_a_call_is_counted(unscreened):
    # killed while it parses (50 kB of parentheses, a 2 s parse): the item is a failure, counted
    assert equivalence.is_equivalent("2x", "x+x")
    threading.Timer(0.5, equivalence.worker_process(0).kill).start()
    before = equivalence.failures()
    assert equivalence.is_equivalent(_PARENS, "1") is False
    delta = _delta(before)
    assert delta["worker_deaths"] == 1 and delta["failed"] == 1


def test_an_interrupted_call_leaves_no_stale_answers(monkeypatch):
    # an exception (Ctrl-C) while waiting kills the worker, so the next call cannot read the
    # answers meant for the interrupted one
    real = equivalence.worker_connection()

    class Interrupting:
        def send(self, obj):
            real.send(obj)

        def poll(self, timeout):
            raise KeyboardInterrupt

    monkeypatch.setattr(equivalence, "worker_connection", lambda slot=0: Interrupting())
    with pytest.raises(KeyboardInterrupt):
        equivalence.equivalent_pairs([("x+1", "1+x"), ("x", "y")])  # not plain numbers: the worker decides
    assert equivalence.worker_process(0) is None
    monkeypatch.undo()
    assert equivalence.equivalent_pairs([("x", "y"), ("x+1", "1+x")]) == [False, True]


# --- The shortcut inside the worker: same answers as math-verify ----------------------------------


def _sympy(text: str):
    from math_verify import parse

    return parse("\\boxed{" + text + "}")[0]


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("37", "nosolution", True),  # a number vs a word (a product of symbols)
        ("cannotbedetermined", "nosolution", True),  # two different words
        ("x^2+9x+7", "37", True),  # a polynomial vs a number
        ("\\frac{19\\pi}{2}", "37", True),  # two different constants
        ("37.0", "nosolution", True),  # a float constant vs a nonconstant polynomial
        ("x^{10000000}", "1", True),  # huge degree: evaluated numerically, not expanded
        ("(x+1)^2", "x^2+2x+1", False),  # equal: never shown different
        ("nosolution", "nosolutino", False),  # the same product of symbols
        ("\\sqrt{2}\\sqrt{3}", "\\sqrt{6}", False),  # equal constants: evalf cannot vouch, not shown
        ("\\sin^2 x+\\cos^2 x", "1", False),  # not a polynomial: left to math-verify
        ("1.0x", "x", False),  # floats next to symbols: left to math-verify
        ("10^{-20}", "0", False),  # a difference below 1e-6 is not trusted
        ("(1,2)", "1", False),  # not an expression (an interval): left to math-verify
        ("29.0", "\\sqrt{1682}", True),  # a float against a radical: 12 apart, far past rounding
        ("\\frac{3\\pi}{2}", "7.0", True),  # pi against a float
        ("1.41421356", "\\sqrt{2}", False),  # a float within 1e-6 (relative) of a radical: math-verify decides
        ("1.0\\times10^{20}", "10^{20}+1000", False),  # 1000 apart, but 1e-17 relative: rounding could hide it
    ],
)
def test_provably_different(a, b, expected):
    assert equivalence._provably_different(_sympy(a), _sympy(b)) is expected


def test_fast_symbolic_step_gives_math_verify_answers(monkeypatch):
    # every ordered pair of tricky answers: math-verify with and without the shortcut agree
    import math_verify.grader as grader
    from math_verify import parse, verify

    answers = ["x+1", "1+x", "(x+1)^2", "x^2+2x+1", "\\sin^2 x+\\cos^2 x", "1", "1.0", "nosolution",
               "nosolutino", "37", "\\frac{19\\pi}{2}", "9.5\\pi", "x+10^{-20}", "x", "0.1+0.2", "0.3",
               "\\sqrt{1682}", "41.0121933", "\\sqrt{2}", "1.41421356"]  # floats near and far from radicals
    parsed = {a: parse("\\boxed{" + a + "}") for a in answers}

    def verdicts():
        return {(g, p): verify(parsed[g], parsed[p]) for g in answers for p in answers if g != p}

    plain = verdicts()
    monkeypatch.setattr(grader, "sympy_symbolic_eq", equivalence._fast_symbolic_eq(grader.sympy_symbolic_eq))
    assert verdicts() == plain
    assert sum(plain.values()) >= 10  # the table has real equivalences in it


def test_two_stage_parsing_gives_latex2sympy_parses(monkeypatch):
    # SLL first, full LL where SLL fails: the same parse as latex2sympy's own parser for every
    # kind of answer, including those SLL cannot parse (polynomials like '100x') and syntax errors
    import latex2sympy2_extended.latex2sympy2 as l2s
    import math_verify.parser
    from math_verify import parse

    answers = ["(10,17)", "(1,2)", "[1,2)", "(-\\infty, 3]", "\\{1,2\\}", "1,2", "1;2", "1,000", "(1,2,3)",
               "x^2+100x+3", "2+15x+x^2", "x=2", "3 \\le x < 5", "x \\in [1,2]", "f(x)=x^2", "10\\%",
               "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "2\\sqrt{3}", "\\frac{19\\pi}{2}", "\\infty",
               "no solution", "Iamnotsure", "\\frac{1}{", "x+", ")(", "7", "0.5", "a,b"]

    def parses():
        math_verify.parser.parse_latex_cached.cache_clear()
        return [(parse("\\boxed{" + a + "}"), [str(x) for x in parse("\\boxed{" + a + "}")]) for a in answers]

    plain = parses()
    monkeypatch.setattr(l2s._Latex2Sympy, "create_parser",
                        equivalence._two_stage_parsing(l2s._Latex2Sympy.create_parser))
    assert parses() == plain
    assert sum(bool(p) for p, _ in plain) >= len(answers) - 4  # the table is mostly parseable answers


def test_parsed_integer_is_math_verify_parse():
    from math_verify import parse

    rng = random.Random(3)
    integers = list(range(-150, 151)) + [rng.randint(-10**15 + 1, 10**15 - 1) for _ in range(150)]
    for s in map(str, integers):
        built, parsed = equivalence._parsed_integer(s), parse("\\boxed{" + s + "}")
        assert built == parsed and list(map(type, built)) == list(map(type, parsed)), s
    for s in ["007", "+7", "7.0", "1/2", "x", "", "1234567890123456"]:  # not normalized integers
        assert equivalence._parsed_integer(s) is None, s


# --- Grouping and majority vote ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "answers, expected",
    [
        ([], []),  # no answers
        ([None, "", "  "], [-1, -1, -1]),  # only empty answers: no group
        (["3", "+3", "03", "4", "-4"], [0, 0, 0, 1, 2]),  # integers only (no math-verify)
        (["7", "7.0", "8"], [0, 0, 1]),  # integer and decimal forms of one number
        (["1/2", "0.5", "\\frac{1}{2}", "x+1", "1+x", None, "", "2", "junk", "junk "],
         [0, 0, 0, 1, 1, -1, -1, 2, 3, 3]),  # equivalent forms grouped, numbered by first sight
        (["no solution", "\\text{no solution}", "5"], [0, 0, 1]),  # text answers
    ],
)
def test_group_answers(answers, expected):
    assert equivalence.group_answers(answers) == expected


def test_group_answers_matches_pairwise_reference():
    # realistic batches: the cached, representative-only, shortcut grouping gives the partition
    # that math-verify on every pair gives
    rng = random.Random(7)
    batches = [solver_answers(rng) for _ in range(24)]
    batches += [["1", "1.0", "\\frac{2}{2}", "x", "no solution", "\\text{no solution}", None],
                ["(1,2)", "\\left(1,2\\right)", "[1,2]", "1,2", "\\{1,2\\}", "2"]]
    for answers in batches:
        assert equivalence.group_answers(answers) == reference_group_answers(answers), answers


def test_reference_equivalent_is_gold_first_math_verify():
    # the reference helper itself: equal forms, different values, junk
    assert reference_equivalent("\\frac{1}{2}", "0.5") is True
    assert reference_equivalent("2", "3") is False
    assert reference_equivalent("no solution", "3") is False


@pytest.mark.parametrize(
    "gold, pred, expected",
    [
        ("0.5", "\\frac{1}{2}", True),  # decimal and fraction of one value
        ("1/2", "\\frac{2}{4}", True),  # unreduced fraction
        ("-\\frac{1}{2}", "-0.5", True),  # signs
        ("7", "7.0", True),  # integer and decimal
        (".5", "0.5", True),  # no leading zero
        ("50", "0.5", False),  # a factor of 100 (a percentage slip) is a different number
        ("0.0000001", "0", False),  # tiny but nonzero: relative gap 1
        ("1000.5", "1000.6", None),  # relative gap 1e-4 < NUMBER_GAP: too close to call ...
        ("0.333333", "1/3", None),  # ... like this one, which math-verify rounds to equal
        ("\\frac{1}{0}", "1", None),  # zero denominator: not a plain number
        ("x", "1", None),  # not a number
        ("1,000", "1000", None),  # thousands separator: math-verify decides
    ],
)
def test_numeric_verdict(gold, pred, expected):
    assert equivalence._numeric_verdict(gold, pred) is expected


def test_numeric_verdict_agrees_with_math_verify():
    # wherever the value shortcut decides, math-verify (gold first, both orders) decides the same:
    # numbers of every scale in every plain form, equal, near and far apart
    rng = random.Random(11)

    def forms(value: Fraction) -> list[str]:
        out = [f"{float(value):.{rng.randint(0, 7)}f}", f"{value.numerator}/{value.denominator}",
               f"\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}" if value >= 0 else
               f"-\\frac{{{-value.numerator}}}{{{value.denominator}}}"]
        return [equivalence.normalize_answer(f) for f in out]

    decided = Counter()
    for _ in range(400):
        scale = 10 ** rng.randint(-6, 6)
        a = Fraction(rng.randint(-999, 999), rng.choice([1, 2, 3, 4, 7, 8, 10, 1000])) * Fraction(scale)
        b = a + a * Fraction(rng.choice([0, 0, 1, -1, 3]), rng.choice([10, 1000, 10 ** 6]))
        gold, pred = rng.choice(forms(a)), rng.choice(forms(b))
        verdict = equivalence._numeric_verdict(gold, pred)
        if verdict is not None and gold != pred:
            decided[verdict] += 1
            assert verdict == reference_equivalent(gold, pred) == reference_equivalent(pred, gold), (gold, pred)
    assert decided[True] > 30 and decided[False] > 60, decided


def test_majority_votes_spread_over_workers_give_the_single_results():
    # a batch over every worker slot: each list's vote as majority_vote gives it, in order
    rng = random.Random(21)
    batches = [solver_answers(rng) for _ in range(40)] + [[], [None, ""], ["3", "3.0", "x"]]
    batches += [[f"x+{k}", f"{k}+x"] for k in range(equivalence.WORKERS)]  # math-verify needed in every slot
    assert rzero.majority_votes(batches) == [rzero.majority_vote(a) for a in batches]
    workers = [equivalence.worker_process(slot) for slot in range(equivalence.WORKERS)]
    assert all(worker is not None and worker.is_alive() for worker in workers)  # every slot was used
    assert equivalence.group_answers_many(batches[:5]) == [equivalence.group_answers(a) for a in batches[:5]]
