"""Table tests for the method core (stages/rzero.py), plus checks of the fast repetition penalty
and answer grouping against the plain reference versions in tests/reference_impl.py.

math-verify runs in one worker process shared by the whole session (started on first use, ~1-2 s);
the tests that kill it check that the next call starts a fresh one.
"""

import random
from collections import Counter
import threading
import time
from fractions import Fraction

import numpy as np
import pytest
import rzero
from reference_impl import (
    arithmetic_question,
    math_questions,
    reference_bleu,
    reference_equivalent,
    reference_group_answers,
    reference_repetition_penalty,
    solver_answers,
)

# --- Prompts ------------------------------------------------------------------------------------


class _PlainTokenizer:
    chat_template = None


class _TemplateTokenizer:
    chat_template = "{{ messages }}"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt, enable_thinking):
        assert tokenize is False and add_generation_prompt is True
        return f"<tpl thinking={enable_thinking}>" + "|".join(m["content"] for m in messages)


def test_prompts_keep_the_format_contract():
    # the Challenger is told the exact output format; the Solver is told to box its answer
    system, user = rzero.challenger_messages()
    assert system["role"] == "system" and user["role"] == "user"
    assert "<question>...</question>" in system["content"] and "\\boxed{" in system["content"]
    assert "<question>...</question>" in user["content"]
    solver = rzero.solver_messages("What is 2 + 3?")
    assert solver == [
        {"role": "system", "content": rzero.SOLVER_SYSTEM},
        {"role": "user", "content": "What is 2 + 3?"},
    ]
    assert "\\boxed{}" in rzero.SOLVER_SYSTEM


@pytest.mark.parametrize(
    "tokenizer, thinking, expected",
    [
        # no chat template: a plain transcript ending where the assistant speaks
        (_PlainTokenizer(), False, f"system: {rzero.SOLVER_SYSTEM}\nuser: Q?\nassistant: "),
        # a chat template is used, with the generation prompt and the thinking switch passed on
        (_TemplateTokenizer(), False, f"<tpl thinking=False>{rzero.SOLVER_SYSTEM}|Q?"),
        (_TemplateTokenizer(), True, f"<tpl thinking=True>{rzero.SOLVER_SYSTEM}|Q?"),
    ],
)
def test_render_prompt(tokenizer, thinking, expected):
    assert rzero.render_prompt(tokenizer, rzero.solver_messages("Q?"), enable_thinking=thinking) == expected


# --- Extraction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, None),  # no completion at all
        ("", None),  # empty completion
        ("The answer is 42.", None),  # no box
        ("so \\boxed{42}.", "42"),  # the plain case, trailing text ignored
        ("\\boxed{ 7 }", "7"),  # content is stripped
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces are kept whole
        ("\\boxed{\\sqrt{\\frac{a}{b^{2}}}}", "\\sqrt{\\frac{a}{b^{2}}}"),  # deeper nesting
        ("first \\boxed{1}, then \\boxed{2}", "2"),  # several boxes: the last wins
        ("\\boxed{1} and finally \\boxed{2", "1"),  # unclosed last box: fall back to the earlier one
        ("\\boxed{1} \\boxed{2} \\boxed{\\frac{3}{4}", "2"),  # fall back to the nearest closed one
        ("only \\boxed{2", None),  # unclosed and nothing earlier
        ("\\boxed{}", ""),  # empty box: an empty answer, not "no box"
        ("\\boxed{   }", ""),  # blank box: same
        ("\\boxed {7}", None),  # a space before the brace is not a box
        ("\\boxed{\\boxed{1}}", "1"),  # box in a box: the last opening is the inner one
        ("\\boxed{a}}", "a"),  # a stray closing brace after the box is ignored
    ],
)
def test_last_boxed(text, expected):
    assert rzero.last_boxed(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, None),  # no completion
        ("", None),  # empty completion
        ("What is 2 + 2?", None),  # no block
        ("<question>What is 2 + 2?</question>\\boxed{4}", "What is 2 + 2?"),  # the format
        ("<question></question>", None),  # empty block: no question
        ("<question>  \n </question>", None),  # blank block: no question
        ("<question>A</question> <question>B</question>", "B"),  # several: the last one
        ("<question>A</question><question> </question>", "A"),  # last one empty: the last non-empty
        ("<question>\n  Line 1\nLine 2  \n</question>", "Line 1\nLine 2"),  # multiline, stripped
        ("<question>never closed", None),  # unclosed block
        ("</question>A<question>", None),  # tags in the wrong order
    ],
)
def test_extract_question(text, expected):
    assert rzero.extract_question(text) == expected


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
    assert rzero.normalize_answer(answer) == expected


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
    assert rzero.is_equivalent(gold, pred) is expected


def test_equivalent_pairs_keeps_order():
    # one call, several kinds of pair: results come back in input order
    pairs = [("1", "1"), ("\\frac{1}{2}", "0.5"), ("2", "3"), (None, "1"), ("x+1", "1+x"), ("a", "b")]
    assert rzero.equivalent_pairs(pairs) == [True, True, False, False, True, False]
    assert rzero.equivalent_pairs([]) == []


def test_is_equivalent_from_other_threads():
    # the point of the worker: math-verify's signal.alarm only works in a main thread, so the
    # bounded check must work from a trainer's or server's thread, also from several at once
    cases = [("\\frac{1}{2}", "0.5", True), ("x+1", "1+x", True), ("3", "4", False), ("1/3", "0.25", False)]
    results: dict = {}

    def check(k: int) -> None:
        gold, pred, _ = cases[k % len(cases)]
        results[k] = rzero.is_equivalent(gold, pred)

    threads = [threading.Thread(target=check, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {k: cases[k % len(cases)][2] for k in range(8)}


# Adversarial answers: math-verify's own timeouts or the worker deadline must bound them.
_TOWER = "10^{10^{10^{10}}}"
_PARENS = "(" * 25000 + "1" + ")" * 25000  # 50 kB, and equal to 1 if it could be parsed
_FRACS = "\\frac{1}{2+" * 4000 + "1" + "}" * 4000  # 48 kB nested continued fraction


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
    assert rzero.is_equivalent(gold, pred) is False
    assert time.monotonic() - start < 15


def test_adversarial_answers_in_a_vote():
    # the adversarial answers get groups of their own; the rest are grouped as usual, in time
    start = time.monotonic()
    groups = rzero.group_answers(["1", _PARENS, "1.0", _TOWER, "\\frac{2}{2}", "2"])
    assert groups == [0, 1, 0, 2, 0, 3]
    assert time.monotonic() - start < 30


def test_timed_out_check_counts_as_different_and_the_worker_restarts(monkeypatch):
    assert rzero.is_equivalent("2x", "x+x")  # worker up (plain numbers never reach it)
    old = rzero._workers[0][0].pid
    monkeypatch.setattr(rzero, "DEADLINE_S", 0.001)
    assert rzero.is_equivalent("(y+3)^2", "y^2+6y+9") is False  # true, but out of time
    assert rzero._workers[0] == []  # the late worker was killed
    monkeypatch.setattr(rzero, "DEADLINE_S", 5.0)
    assert rzero.is_equivalent("(y+3)^2", "y^2+6y+9") is True  # a fresh worker answers
    assert rzero._workers[0][0].pid != old


def test_one_late_item_does_not_stop_the_rest(monkeypatch):
    # a batch: the item past its deadline is False, the next one is answered by a fresh worker
    rzero.is_equivalent("x+1", "1+x")
    monkeypatch.setattr(rzero, "DEADLINE_S", 1.5)  # below math-verify's own 2 s parse timeout
    start = time.monotonic()
    assert rzero.equivalent_pairs([(_TOWER + "+1", "1"), ("x+x", "2x")]) == [False, True]
    assert time.monotonic() - start < 15


def test_deadline_bounds_one_comparison_not_a_whole_item(monkeypatch):
    # in a vote the worker ticks after each parse or comparison, so one comparison that hangs in C
    # code (x^10000000 against a factorial of a huge number) is cut after DEADLINE_S, not after
    # DEADLINE_S times the number of groups so far
    rzero.is_equivalent("x+1", "1+x")
    old = rzero._workers[0][0].pid
    monkeypatch.setattr(rzero, "DEADLINE_S", 2.0)
    start = time.monotonic()
    groups = rzero.group_answers(["(10^{10^{10}})!", "a", "b", "c", "d", "e", "x^{10000000}", "f", "a"])
    assert groups == [0, 1, 2, 3, 4, 5, 6, 7, 1]  # the cut answer alone, the rest as usual
    assert time.monotonic() - start < 12
    assert rzero._workers[0][0].pid != old  # a fresh worker took over after the hung one


def test_an_unparseable_answer_costs_its_timeout_once():
    # math-verify's parse timeout escapes as a BaseException; the worker caches the failure
    # instead of dying, so the same answer is not parsed again
    assert rzero.is_equivalent(_PARENS + " ", "1") is False  # parsed (2 s timeout) and cached
    start = time.monotonic()
    assert rzero.is_equivalent(_PARENS + " ", "2") is False
    assert time.monotonic() - start < 1


def test_a_worker_that_died_between_calls_is_replaced():
    # killed from outside (e.g. out of memory): the next call starts a new one instead of failing
    assert rzero.is_equivalent("2x", "x+x")
    process = rzero._workers[0][0]
    process.kill()
    process.join()
    assert rzero.is_equivalent("2x", "x+x")
    assert rzero._workers[0][0] is not process


def test_an_interrupted_call_leaves_no_stale_answers(monkeypatch):
    # an exception (Ctrl-C) while waiting kills the worker, so the next call cannot read the
    # answers meant for the interrupted one
    real = rzero._worker_conn()

    class Interrupting:
        def send(self, obj):
            real.send(obj)

        def poll(self, timeout):
            raise KeyboardInterrupt

    monkeypatch.setattr(rzero, "_worker_conn", lambda slot=0: Interrupting())
    with pytest.raises(KeyboardInterrupt):
        rzero.equivalent_pairs([("x+1", "1+x"), ("x", "y")])  # not plain numbers: the worker decides
    assert rzero._workers[0] == []
    monkeypatch.undo()
    assert rzero.equivalent_pairs([("x", "y"), ("x+1", "1+x")]) == [False, True]


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
    ],
)
def test_provably_different(a, b, expected):
    assert rzero._provably_different(_sympy(a), _sympy(b)) is expected


def test_fast_symbolic_step_gives_math_verify_answers(monkeypatch):
    # every ordered pair of tricky answers: math-verify with and without the shortcut agree
    import math_verify.grader as grader
    from math_verify import parse, verify

    answers = ["x+1", "1+x", "(x+1)^2", "x^2+2x+1", "\\sin^2 x+\\cos^2 x", "1", "1.0", "nosolution",
               "nosolutino", "37", "\\frac{19\\pi}{2}", "9.5\\pi", "x+10^{-20}", "x", "0.1+0.2", "0.3"]
    parsed = {a: parse("\\boxed{" + a + "}") for a in answers}

    def verdicts():
        return {(g, p): verify(parsed[g], parsed[p]) for g in answers for p in answers if g != p}

    plain = verdicts()
    monkeypatch.setattr(grader, "sympy_symbolic_eq", rzero._fast_symbolic_eq(grader.sympy_symbolic_eq))
    assert verdicts() == plain
    assert sum(plain.values()) >= 10  # the table has real equivalences in it


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
    assert rzero.group_answers(answers) == expected


@pytest.mark.parametrize(
    "answers, expected",
    [
        (["3", "3", "1/2", "0.5"], ("3", 0.5)),  # tie: the group seen first wins
        (["1/2", "0.5", "3", "3"], ("1/2", 0.5)),  # ... in either order
        (["", None, "  "], ("", 0.0)),  # all empty: no label
        ([], ("", 0.0)),  # nothing at all
        (["5", None, None, None], ("5", 0.25)),  # empty answers count in m
        (["0.5", "\\frac{1}{2}", "1/2", "3"], ("0.5", 0.75)),  # equivalent forms vote together
        ([" $3$ ", "3", "4"], ("$3$", 2 / 3)),  # the label is the first answer as written, stripped
        (["12"] * 4 + ["13"] * 3 + [None] * 3, ("12", 0.4)),  # m = 10, a plurality
        (["x"] * 10, ("x", 1.0)),  # unanimous
    ],
)
def test_majority_vote(answers, expected):
    label, consistency = rzero.majority_vote(answers)
    assert label == expected[0]
    assert consistency == pytest.approx(expected[1])


def test_group_answers_matches_pairwise_reference():
    # realistic batches: the cached, representative-only, shortcut grouping gives the partition
    # that math-verify on every pair gives
    rng = random.Random(7)
    batches = [solver_answers(rng) for _ in range(24)]
    batches += [["1", "1.0", "\\frac{2}{2}", "x", "no solution", "\\text{no solution}", None],
                ["(1,2)", "\\left(1,2\\right)", "[1,2]", "1,2", "\\{1,2\\}", "2"]]
    for answers in batches:
        assert rzero.group_answers(answers) == reference_group_answers(answers), answers


def test_reference_equivalent_is_gold_first_math_verify():
    # the reference helper itself: equal forms, different values, junk
    assert reference_equivalent("\\frac{1}{2}", "0.5") is True
    assert reference_equivalent("2", "3") is False
    assert reference_equivalent("no solution", "3") is False


# --- Rewards and the band ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p, expected",
    [
        (0.0, 0.0),  # the Solver never agrees: no reward
        (0.5, 1.0),  # an even split: full reward
        (1.0, 0.0),  # always agrees: no reward
        (0.3, 0.6),  # 1 - 2 * |0.3 - 0.5| (the paper's form, twice the reference code's min(p, 1-p))
        (0.7, 0.6),  # symmetric around 1/2
        (0.1, 0.2),  # one vote of ten
    ],
)
def test_uncertainty_reward(p, expected):
    assert rzero.uncertainty_reward(p) == pytest.approx(expected)


@pytest.mark.parametrize(
    "p, delta, expected",
    [
        (2 / 10, 0.25, False),  # 2 of 10 votes: outside
        (3 / 10, 0.25, True),  # 3 of 10: the lower edge of the kept range
        (5 / 10, 0.25, True),  # the middle
        (7 / 10, 0.25, True),  # 7 of 10: the upper edge
        (8 / 10, 0.25, False),  # 8 of 10: outside
        (0.25, 0.25, True),  # exactly on the band edge: inside (float tolerance)
        (0.75, 0.25, True),  # exactly on the other edge: inside
        (0.0, 0.25, False),  # no agreement
        (1.0, 0.25, False),  # full agreement
        (1.0, 0.5, True),  # delta = 1/2 keeps everything
        (0.4, 0.0, False),  # delta = 0 keeps only p = 1/2
        (0.5, 0.0, True),
    ],
)
def test_in_band(p, delta, expected):
    assert rzero.in_band(p, delta) is expected


@pytest.mark.parametrize(
    "question, p, penalty, expected",
    [
        (None, 0.5, 0.0, 0.0),  # no question parsed: 0, whatever the rest
        (None, 0.5, -1.0, 0.0),  # ... even with a negative penalty
        ("Q", 0.5, 0.0, 1.0),  # even split, no repeats
        ("Q", 0.5, 0.25, 0.75),  # the penalty is subtracted
        ("Q", 0.3, 0.1, 0.5),  # 0.6 - 0.1
        ("Q", 0.5, 1.5, 0.0),  # clipped at 0
        ("Q", 1.0, 0.1, 0.0),  # 0 - 0.1 clipped at 0
    ],
)
def test_challenger_reward(question, p, penalty, expected):
    assert rzero.challenger_reward(question, p, penalty) == pytest.approx(expected)


# --- BLEU and the repetition penalty ---------------------------------------------------------------

_EDGE_QUESTIONS = [
    "", "  ", "a", "a b", "a b c", "a b c d", "a b c d e", "b a", "a a a a", "a a", "x x x x x x x x",
    "What is 4 * 7 + 5?", "What is 4 * 7 + 5?", "What is 4 * 7 + 6?", "Compute 9 - 2 * 3.",
    "Let $ABC$ be a triangle with side lengths 13, 14 and 15. Find the area of its incircle.",
    "Let $ABC$ be a triangle with side lengths 13, 14 and 16. Find the area of its incircle.",
]


def test_pairwise_bleu_matches_nltk():
    # every (hypothesis row, reference column), the diagonal included: empty hypotheses and
    # references, hypotheses shorter than 4 tokens, repeated tokens, exact and near duplicates
    rng = random.Random(3)
    questions = _EDGE_QUESTIONS + math_questions(rng, 12) + [arithmetic_question(rng) for _ in range(8)]
    fast = rzero.pairwise_bleu(questions)
    plain = np.array([[reference_bleu(h, r) for r in questions] for h in questions])
    assert fast.shape == (len(questions), len(questions))
    assert np.abs(fast - plain).max() <= 1e-9


@pytest.mark.parametrize(
    "hypothesis, reference, expected",
    [
        ("a b c d", "a b c d e f g h", np.exp(1 - 8 / 4)),  # a short hypothesis pays the brevity penalty
        ("a b c d e f g h", "a b c d", (4 / 8 * 3 / 7 * 2 / 6 * 1 / 5) ** 0.25),  # a long one does not
        ("", "a b", 0.0),  # empty hypothesis
        ("a b", "", 0.0),  # empty reference: no unigram match
        ("a b", "a b", 0.1 ** 0.5),  # identical but 2 tokens: 3- and 4-gram precision smoothed to 0.1
    ],
)
def test_pairwise_bleu_orientation_and_edges(hypothesis, reference, expected):
    matrix = rzero.pairwise_bleu([hypothesis, reference])
    assert matrix[0, 1] == pytest.approx(expected, abs=1e-12)  # row = hypothesis, column = reference
    assert matrix[0, 1] == pytest.approx(reference_bleu(hypothesis, reference), abs=1e-12)


def test_pairwise_bleu_empty_batch():
    assert rzero.pairwise_bleu([]).shape == (0, 0)  # no questions, no matrix


_Q1, _Q2, _Q3 = "What is 4 * 7 + 5?", "What is 4 * 7 + 6?", "Compute 9 - 2 * 3 + 1."


@pytest.mark.parametrize(
    "questions, kwargs, expected",
    [
        ([], {}, []),  # B = 0
        ([_Q1], {}, [1.0]),  # B = 1: a cluster of one out of one
        ([_Q1], {"weight": 0.5}, [0.5]),  # ... times lambda
        ([_Q1, _Q1, _Q1, _Q3], {}, [0.75, 0.75, 0.75, 0.25]),  # exact duplicates cluster
        ([_Q1, _Q2, _Q3], {}, [2 / 3, 2 / 3, 1 / 3]),  # a near duplicate (one token changed) clusters
        (["", ""], {}, [0.5, 0.5]),  # empty questions have BLEU 0: never duplicates
        (["seven", "seven"], {}, [0.5, 0.5]),  # one word: BLEU-4 is 0.18 even when identical
        (["a b", "a b"], {}, [0.5, 0.5]),  # two words: 0.32, still apart (d = 0.68 > tau)
        (["a b c", "a b c"], {}, [1.0, 1.0]),  # three words: 0.56, together (d = 0.44 < tau)
        ([_Q1, _Q1, _Q3], {"weight": 2.0}, [4 / 3, 4 / 3, 2 / 3]),  # lambda scales
        ([_Q1, _Q1, _Q3], {"threshold": 0.0}, [1 / 3, 1 / 3, 1 / 3]),  # tau = 0: nothing merges
        (["a", "b"], {"threshold": 1.0}, [0.5, 0.5]),  # d = 1 is not below tau = 1
        (["a", "b"], {"threshold": 1.0 + 1e-9}, [1.0, 1.0]),  # ... but is below anything above it
    ],
)
def test_repetition_penalty(questions, kwargs, expected):
    assert rzero.repetition_penalty(questions, **kwargs) == pytest.approx(expected)


def _penalty_batches():
    rng = random.Random(11)
    yield "micro-world", [arithmetic_question(rng) for _ in range(40)]
    yield "edge strings", list(_EDGE_QUESTIONS)
    yield "duplicates", [rng.choice([_Q1, _Q2, _Q3, "", "seven"]) for _ in range(30)]
    for b in (2, 3, 17, 64, 200):
        yield f"math B={b}", math_questions(rng, b, duplicate_rate=0.15, near_rate=0.3)


@pytest.mark.parametrize("name, questions", list(_penalty_batches()), ids=lambda v: v if isinstance(v, str) else "")
def test_repetition_penalty_matches_sklearn_reference(name, questions):
    # the fast path (sparse n-gram products + scipy linkage) against nltk + scikit-learn
    fast = rzero.repetition_penalty(questions)
    plain = reference_repetition_penalty(questions)
    assert len(fast) == len(questions)
    assert max(abs(f - p) for f, p in zip(fast, plain)) <= 1e-9


# --- The micro-world's evaluator ------------------------------------------------------------------


@pytest.mark.parametrize(
    "question, expected",
    [
        ("What is 4 * 7 + 5?", Fraction(33)),  # the micro-world's own wording
        ("What is 2 + 3 * 4?", Fraction(14)),  # precedence: * before +
        ("What is 2 * 3 + 4?", Fraction(10)),
        ("What is (2 + 3) * 4?", Fraction(20)),  # parentheses
        ("What is ((2))?", Fraction(2)),  # redundant parentheses
        ("What is 8 - 3 - 2?", Fraction(3)),  # left associative minus
        ("What is 10 / 4 / 5?", Fraction(1, 2)),  # left associative division
        ("Compute 7 / 2.", Fraction(7, 2)),  # division gives an exact fraction
        ("Calculate 6/3", Fraction(2)),  # other prefixes, no spaces, no punctuation
        ("2 + 3 * 4 =", Fraction(14)),  # bare expression with '='
        ("What is -3 * -2?", Fraction(6)),  # unary minus
        ("What is 3 - - 2?", Fraction(5)),  # unary minus after a binary one
        ("What is -(2 + 3)?", Fraction(-5)),  # unary minus on a group
        ("What is 123456789012 + 1?", Fraction(123456789013)),  # 12 digits: still allowed
        ("What is 1234567890123 + 1?", None),  # 13 digits: too large for the micro-world
        ("What is 1 / 0?", None),  # division by zero
        ("What is 7 / (3 - 3)?", None),  # division by a zero expression
        ("What is 2 +?", None),  # dangling operator
        ("What is (1 + 2?", None),  # unbalanced parenthesis
        ("What is 1 + 2)?", None),  # unbalanced the other way
        ("What is ?", None),  # nothing to compute
        ("what is 2 + 2?", None),  # the prefix is the micro-world's exact wording
        ("What is 2 ** 3?", None),  # no power operator
        ("What is 1e3?", None),  # no scientific notation
        ("What is 1_000 + 1?", None),  # no Python digit separators
        ('__import__("os").system("ls")', None),  # eval-style injection
        ("What is (lambda: 1)()?", None),  # ... another
        ("What is 2 + 2?\nimport os", None),  # ... trailing code
        ("What is " + "1 + " * 100 + "1?", None),  # very long input
        ("", None),  # empty
        (None, None),  # missing
    ],
)
def test_evaluate_arithmetic(question, expected):
    assert rzero.evaluate_arithmetic(question) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        (Fraction(7), "7"),  # integer
        (Fraction(-3), "-3"),  # negative integer
        (Fraction(0), "0"),  # zero
        (Fraction(5, 2), "5/2"),  # proper fraction
        (Fraction(-5, 2), "-5/2"),  # negative fraction: sign on the numerator
        (Fraction(4, 2), "2"),  # reduced first
    ],
)
def test_format_number(value, expected):
    assert rzero.format_number(value) == expected


def test_micro_world_answers_round_trip_through_equivalence():
    # the evaluator's formatted answer is what the Solver should box; it must match itself and
    # its decimal form, so the micro-world's truth and the vote speak the same language
    assert rzero.is_equivalent(rzero.format_number(rzero.evaluate_arithmetic("Compute 7 / 2.")), "3.5")
    assert rzero.majority_vote(["7/2", "3.5", "\\frac{7}{2}", "4"]) == ("7/2", 0.75)


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
    assert rzero._numeric_verdict(gold, pred) is expected


def test_numeric_verdict_agrees_with_math_verify():
    # wherever the value shortcut decides, math-verify (gold first, both orders) decides the same:
    # numbers of every scale in every plain form, equal, near and far apart
    rng = random.Random(11)

    def forms(value: Fraction) -> list[str]:
        out = [f"{float(value):.{rng.randint(0, 7)}f}", f"{value.numerator}/{value.denominator}",
               f"\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}" if value >= 0 else
               f"-\\frac{{{-value.numerator}}}{{{value.denominator}}}"]
        return [rzero.normalize_answer(f) for f in out]

    decided = Counter()
    for _ in range(400):
        scale = 10 ** rng.randint(-6, 6)
        a = Fraction(rng.randint(-999, 999), rng.choice([1, 2, 3, 4, 7, 8, 10, 1000])) * Fraction(scale)
        b = a + a * Fraction(rng.choice([0, 0, 1, -1, 3]), rng.choice([10, 1000, 10 ** 6]))
        gold, pred = rng.choice(forms(a)), rng.choice(forms(b))
        verdict = rzero._numeric_verdict(gold, pred)
        if verdict is not None and gold != pred:
            decided[verdict] += 1
            assert verdict == reference_equivalent(gold, pred) == reference_equivalent(pred, gold), (gold, pred)
    assert decided[True] > 30 and decided[False] > 60, decided


def test_majority_votes_spread_over_workers_give_the_single_results():
    # a batch over both worker slots: each list's vote as majority_vote gives it, in order
    rng = random.Random(21)
    batches = [solver_answers(rng) for _ in range(40)] + [[], [None, ""], ["3", "3.0", "x"]]
    assert rzero.majority_votes(batches) == [rzero.majority_vote(a) for a in batches]
    assert all(worker and worker[0].is_alive() for worker in rzero._workers)  # both slots were used
    assert rzero.group_answers_many(batches[:5]) == [rzero.group_answers(a) for a in batches[:5]]
