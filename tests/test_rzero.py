"""Table tests for the method core (stages/rzero.py), plus checks of the fast repetition penalty
against the plain reference version in tests/reference_impl.py. Whether two answers are the same
(equivalence.py) has its own tests in tests/test_equivalence.py.
"""

import random
from fractions import Fraction

import numpy as np
import pytest
import equivalence
import microworld
import rzero
from reference_impl import arithmetic_question, math_questions, reference_bleu, reference_repetition_penalty

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
        ([_Q1], {"penalty_weight": 0.5}, [0.5]),  # ... times lambda
        ([_Q1, _Q1, _Q1, _Q3], {}, [0.75, 0.75, 0.75, 0.25]),  # exact duplicates cluster
        ([_Q1, _Q2, _Q3], {}, [2 / 3, 2 / 3, 1 / 3]),  # a near duplicate (one token changed) clusters
        (["", ""], {}, [0.5, 0.5]),  # empty questions have BLEU 0: never duplicates
        (["seven", "seven"], {}, [0.5, 0.5]),  # one word: BLEU-4 is 0.18 even when identical
        (["a b", "a b"], {}, [0.5, 0.5]),  # two words: 0.32, still apart (d = 0.68 > tau)
        (["a b c", "a b c"], {}, [1.0, 1.0]),  # three words: 0.56, together (d = 0.44 < tau)
        ([_Q1, _Q1, _Q3], {"penalty_weight": 2.0}, [4 / 3, 4 / 3, 2 / 3]),  # lambda scales
        ([_Q1, _Q1, _Q3], {"tau": 0.0}, [1 / 3, 1 / 3, 1 / 3]),  # tau = 0: nothing merges
        (["a", "b"], {"tau": 1.0}, [0.5, 0.5]),  # d = 1 is not below tau = 1
        (["a", "b"], {"tau": 1.0 + 1e-9}, [1.0, 1.0]),  # ... but is below anything above it
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
    assert microworld.evaluate_arithmetic(question) == expected


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
    assert microworld.format_number(value) == expected


def test_micro_world_answers_round_trip_through_equivalence():
    # the evaluator's formatted answer is what the Solver should box; it must match itself and
    # its decimal form, so the micro-world's truth and the vote speak the same language
    assert equivalence.is_equivalent(microworld.format_number(microworld.evaluate_arithmetic("Compute 7 / 2.")), "3.5")
    assert rzero.majority_vote(["7/2", "3.5", "\\frac{7}{2}", "4"]) == ("7/2", 0.75)
