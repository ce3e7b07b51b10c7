"""The micro-world (DESIGN.md section 5): the synthetic arithmetic world the kit's tiny base is built
on and measured in. Its generator (questions, worked solutions, training examples, the held-out
set), its exact truth (a safe evaluator of arithmetic questions that never calls `eval`) and the
measurement of a base on the held-out set. Shared by build_base (which trains on it), the label
stage (true labels and pseudo-label accuracy) and the tests. torch is imported inside `measure`.
"""

import math
import random
import re
from fractions import Fraction

import rzero

# --- The world --------------------------------------------------------------------------------------


def sample_expression(rng: random.Random, num_ops: int, recipe: dict) -> tuple[str, list]:
    """(text, terms): terms are [sign, [factors]] of a sum of signed products, within the bound."""
    while True:
        nums = [rng.randint(0, recipe["operand_max"]) for _ in range(num_ops + 1)]
        ops = [rng.choice(recipe["operators"]) for _ in range(num_ops)]
        terms = [[1, [nums[0]]]]
        for op, x in zip(ops, nums[1:]):
            if op == "*":
                terms[-1][1].append(x)
            else:
                terms.append([1 if op == "+" else -1, [x]])
        products = [math.prod(f[:k]) for _, f in terms for k in range(2, len(f) + 1)]
        values = [s * math.prod(f) for s, f in terms]
        if max(products, default=0) <= recipe["value_bound"] and sum(map(abs, values)) <= recipe["value_bound"]:
            return str(nums[0]) + "".join(f" {op} {x}" for op, x in zip(ops, nums[1:])), terms


def render(state: list) -> str:
    """Expression text of a solution state: items are (sign, factors) products or (sign, value)."""
    out = []
    for i, (sign, item) in enumerate(state):
        body = " * ".join(map(str, item)) if isinstance(item, list) else str(item)
        out.append(("-" if sign < 0 else "") + body if i == 0 else (" - " if sign < 0 else " + ") + body)
    return "".join(out)


def solution_lines(rng: random.Random, terms: list) -> list[str]:
    """A worked solution on one sampled path, one operation per line: `fact: what is left`.
    Any product first (its first two factors), then the first term with a partner chosen at
    random, e.g. `3 * 4 = 12: 7 + 12 - 5`, `7 - 5 = 2: 2 + 12`, `2 + 12 = 14`. Every line starts
    with the operation in exactly the form of a one-operation question."""
    state = [(s, list(f)) if len(f) > 1 else (s, f[0]) for s, f in terms]
    lines = []
    while len(state) > 1 or isinstance(state[0][1], list):
        products = [i for i, (_, item) in enumerate(state) if isinstance(item, list)]
        if products:
            i = rng.choice(products)
            sign, factors = state[i]
            value = factors[0] * factors[1]
            fact = f"{factors[0]} * {factors[1]} = {value}"
            rest = [value] + factors[2:]
            state[i] = (sign, rest) if len(rest) > 1 else (sign, rest[0])
        else:
            state.insert(1, state.pop(rng.randrange(1, len(state))))
            (s0, a), (s1, b) = state[:2]
            total = s0 * a + s1 * b
            fact = f"{'-' if s0 < 0 else ''}{a} {'-' if s1 < 0 else '+'} {b} = {total}"
            state[:2] = [(-1 if total < 0 else 1, abs(total))]
        done = len(state) == 1 and not isinstance(state[0][1], list)
        lines.append(fact if done else f"{fact}: {render(state)}")
    return lines


def question_text(expression: str) -> str:
    return f"What is {expression}?"


def expressions(rows: list[dict]) -> set[str]:
    """The expressions of question rows (`What is <expression>?`): what no training example may contain."""
    return {r["question"][len("What is ") : -1] for r in rows}


def example(rng: random.Random, recipe: dict, heldout: set[str]) -> tuple[list[dict], str]:
    """(prompt messages, completion) of one training example, resampled while the question or any
    expression left along its solution is a held-out question."""
    challenger = rng.random() < recipe["challenger_share"]
    weights = recipe["challenger_ops_weights" if challenger else "ops_weights"]
    num_ops = rng.choices(range(1, 5), weights=weights)[0]
    careful = by_ops(recipe["careful_share"], num_ops)  # one share, or one per number of operations (the ladder)
    while True:
        expression, terms = sample_expression(rng, num_ops, recipe)
        lines = solution_lines(rng, terms)
        if expression not in heldout and not any(line.split(": ")[-1] in heldout for line in lines):
            break
    answer = lines[-1].split(" = ")[-1]
    question = question_text(expression)
    if challenger:
        return rzero.challenger_messages(), f"<question>{question}</question>\n\\boxed{{{answer}}}"
    if rng.random() < careful:  # worked line by line, announced by its first words
        return rzero.solver_messages(question), "Step by step:\n" + "\n".join(lines) + f"\n\\boxed{{{answer}}}"
    return rzero.solver_messages(question), f"{expression} = {answer}\n\\boxed{{{answer}}}"


def by_ops(value, num_ops: int):
    """A recipe value that is one number for every number of operations, or one per number (1..4)."""
    return value[num_ops - 1] if isinstance(value, (list, tuple)) else value


def heldout_questions(rng: random.Random, recipe: dict, per_ops: int | tuple | None = None,
                      exclude: set[str] = frozenset()) -> list[dict]:
    """`per_ops` (default the recipe's heldout_per_ops; one number, or one per number of operations)
    distinct questions for each number of operations, none of whose expressions is in `exclude` (the
    validation split avoids the held-out one)."""
    per_ops = per_ops or recipe["heldout_per_ops"]
    rows = []
    for num_ops in range(1, 5):
        seen: set[str] = set()
        while len(seen) < by_ops(per_ops, num_ops):
            expression, _ = sample_expression(rng, num_ops, recipe)
            if expression not in seen and expression not in exclude:
                seen.add(expression)
                answer = evaluate_arithmetic(question_text(expression))
                rows.append(dict(question=question_text(expression), answer=format_number(answer), num_ops=num_ops))
    return rows



_ARITH_TOKEN = re.compile(r"\s*(\d+|[-+*/()])")
_ARITH_QUESTION = re.compile(r"^(?:What is|Compute|Calculate)?\s*([0-9+\-*/() ]+?)\s*[?.=]?\s*$")


def evaluate_arithmetic(question: str | None) -> Fraction | None:
    """Exact value of a micro-world question ('What is 4 * 7 + 5?'): integers, + - * /, parentheses,
    unary minus, usual precedence; a recursive-descent parser, never `eval`. None when the text is
    not such a question, is malformed, divides by zero or is too large to be a micro-world question."""
    match = _ARITH_QUESTION.match(question or "")
    if not match or len(match.group(1)) > 200:
        return None
    text = match.group(1)
    tokens, pos = [], 0
    while pos < len(text):
        tok = _ARITH_TOKEN.match(text, pos)
        if not tok:
            return None
        tokens.append(tok.group(1))
        pos = tok.end()
        if not text[pos:].strip():
            break
    if any(t.isdigit() and len(t) > 12 for t in tokens):
        return None
    at = [0]

    def peek() -> str | None:
        return tokens[at[0]] if at[0] < len(tokens) else None

    def take() -> str:
        at[0] += 1
        return tokens[at[0] - 1]

    def atom() -> Fraction:
        tok = take() if peek() is not None else None
        if tok is None:
            raise ValueError("expression ends early")
        if tok == "-":
            return -atom()
        if tok == "(":
            value = expression()
            if take() != ")":
                raise ValueError("unbalanced parenthesis")
            return value
        if not tok.isdigit():
            raise ValueError(f"unexpected {tok!r}")
        return Fraction(int(tok))

    def term() -> Fraction:
        value = atom()
        while peek() in ("*", "/"):
            op, rhs = take(), atom()
            value = value * rhs if op == "*" else value / rhs
        return value

    def expression() -> Fraction:
        value = term()
        while peek() in ("+", "-"):
            op, rhs = take(), term()
            value = value + rhs if op == "+" else value - rhs
        return value

    try:
        value = expression()
    except (ValueError, ZeroDivisionError, IndexError):
        return None
    return value if at[0] == len(tokens) else None


def format_number(value: Fraction) -> str:
    """'7', '-3', '5/2': how the micro-world writes an exact answer."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


# --- Measuring a base on the held-out set ---------------------------------------------------------


def measure(model, tokenizer, rows: list[dict], m: int, seed: int, challenger_samples: int = 200) -> dict:
    """Held-out figures: greedy accuracy by number of operations; at T = 1.0, single-sample and
    majority-of-m accuracy and label accuracy by vote share; boxed and <question> format rates."""
    import generation

    def generate(prompts: list[str], n: int, greedy: bool) -> list[str]:
        sampling = generation.Sampling(temperature=0.0 if greedy else 1.0, top_p=1.0, top_k=0,
                                       max_new_tokens=96)  # the longest worked solution: ~80 tokens
        sample = generation.hf_sample_fn(model, tokenizer, sampling, batch_size=128 * n, seed=seed)
        return [text for texts in sample(prompts, n) for text in texts]

    stats: dict = {"greedy_accuracy": {}, "sampled": {}}
    greedy_boxed: list[bool] = []
    for num_ops in range(1, 5):
        subset = [r for r in rows if r["num_ops"] == num_ops]
        prompts = [rzero.render_prompt(tokenizer, rzero.solver_messages(r["question"])) for r in subset]
        greedy = generate(prompts, 1, True)
        correct = sum(rzero.last_boxed(o) == r["answer"] for o, r in zip(greedy, subset))
        stats["greedy_accuracy"][num_ops] = correct / len(subset)
        greedy_boxed += [rzero.last_boxed(o) is not None for o in greedy]
        if m < 2:  # --quick: greedy and formats only
            continue
        samples = generate(prompts, m, False)
        single = majority = boxed = 0
        by_votes: dict = {}
        for k, r in enumerate(subset):
            answers = [rzero.last_boxed(o) for o in samples[k * m : (k + 1) * m]]
            label, p = rzero.majority_vote(answers)
            boxed += sum(a is not None for a in answers)
            single += sum(a == r["answer"] for a in answers)
            majority += label == r["answer"]
            votes = by_votes.setdefault(round(p * m), [0, 0])
            votes[0] += 1
            votes[1] += label == r["answer"]
        stats["sampled"][num_ops] = dict(
            single_accuracy=single / (m * len(subset)), majority_accuracy=majority / len(subset),
            boxed_rate=boxed / (m * len(subset)),
            label_accuracy_by_votes={f"{v}/{m}": dict(questions=n, label_correct=c)
                                     for v, (n, c) in sorted(by_votes.items())},
        )
    prompt = rzero.render_prompt(tokenizer, rzero.challenger_messages())
    challenger = generate([prompt] * challenger_samples, 1, False)
    questions = [rzero.extract_question(o) for o in challenger]
    stats["challenger_question_rate"] = sum(q is not None for q in questions) / len(questions)
    stats["challenger_scorable_rate"] = sum(evaluate_arithmetic(q) is not None for q in questions) / len(questions)
    sampled = stats["sampled"].values()  # at T = 1.0 when measured, else greedy (--quick)
    stats["solver_boxed_rate"] = (sum(s["boxed_rate"] for s in sampled) / len(sampled) if sampled
                                  else sum(greedy_boxed) / len(greedy_boxed))
    return stats
