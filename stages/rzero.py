"""The R-Zero method core, shared by the stages: prompts, answer extraction, answer equivalence,
majority voting, the Challenger's rewards, the band filter and the micro-world's safe evaluator.

Plain functions with no heavy import at the top (math-verify, nltk, numpy and scipy are imported
where they are used), so a stage's `--help` stays instant. Symbols follow the paper:
m answers per question, consistency p, band half-width delta, clustering cut tau, weight lambda.
"""

import atexit
import math
import re
from collections import Counter
from fractions import Fraction

# --- Prompts (DESIGN.md section 3) -------------------------------------------------------------

CHALLENGER_SYSTEM = (
    "You are an expert competition-math problem setter. Design one new, non-trivial problem from "
    "any area of mathematics, at a level that fewer than 30% of strong high-school students could "
    "solve. Avoid textbook exercises and famous contest problems. Think privately, then output only "
    "the problem inside <question>...</question>, followed by its final answer as \\boxed{answer}."
)
CHALLENGER_USER = (
    "Write one new challenging question in the format <question>...</question> followed by "
    "\\boxed{answer}."
)
SOLVER_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def challenger_messages() -> list[dict]:
    return [{"role": "system", "content": CHALLENGER_SYSTEM}, {"role": "user", "content": CHALLENGER_USER}]


def solver_messages(question: str) -> list[dict]:
    return [{"role": "system", "content": SOLVER_SYSTEM}, {"role": "user", "content": question}]


def render_prompt(tokenizer, messages: list[dict], enable_thinking: bool = False) -> str:
    """The prompt text for `messages`: the tokenizer's chat template with the generation prompt,
    or a plain `system: ...` / `user: ...` transcript when the tokenizer has no template.
    `enable_thinking` is Qwen3's switch; templates that do not know it ignore it."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
        )
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


# --- Extraction --------------------------------------------------------------------------------

_QUESTION = re.compile(r"<question>(.*?)</question>", re.DOTALL)


def last_boxed(text: str | None) -> str | None:
    """Content of the last `\\boxed{...}` whose braces balance, stripped; None when there is none."""
    if not text:
        return None
    start = text.rfind("\\boxed{")
    while start >= 0:
        depth, i = 1, start + len("\\boxed{")
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start + len("\\boxed{") : i - 1].strip()
        start = text.rfind("\\boxed{", 0, start)  # unclosed box: fall back to an earlier one
    return None


def extract_question(text: str | None) -> str | None:
    """The last non-empty `<question>...</question>` block, stripped; None when there is none."""
    for block in reversed(_QUESTION.findall(text or "")):
        if block.strip():
            return block.strip()
    return None


# --- Answer equivalence -----------------------------------------------------------------------

_SPACING = re.compile(r"\\[,;:! ]|\\left|\\right|\s+")
_INTEGER = re.compile(r"[+-]?\d{1,15}")
VERIFY_TIMEOUT_S = 2  # math-verify's own bound on one parse or comparison (signal.alarm, in the worker)
DEADLINE_S = 5.0  # wall-clock bound per answer, enforced from outside by killing the worker


def normalize_answer(answer: str | None) -> str:
    """Cheap, meaning-preserving normalization for the string fast path ('' for no answer)."""
    if answer is None:
        return ""
    s = answer.strip().strip("$").strip()
    if s.startswith("\\text{") and s.endswith("}"):
        s = s[len("\\text{") : -1]
    s = _SPACING.sub("", s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").rstrip(".")
    if _INTEGER.fullmatch(s):
        s = str(int(s))  # '+007' and '7' are one answer
    return s


def _verify_worker(conn) -> None:
    """Child process: answers one item at a time, so the parent can bound each one. math-verify's
    signal.alarm timeouts work here (its main thread); a hang in C code is the parent's to kill."""
    import logging

    from math_verify import parse, verify

    logging.disable(logging.WARNING)
    cache: dict[str, list] = {}

    def parsed(s: str) -> list:
        if s not in cache:
            if len(cache) > 100_000:
                cache.clear()
            cache[s] = parse("\\boxed{" + s + "}", parsing_timeout=VERIFY_TIMEOUT_S)
        return cache[s]

    def same(gold: str, pred: str) -> bool:
        g, p = parsed(gold), parsed(pred)
        return bool(g and p and verify(g, p, timeout_seconds=VERIFY_TIMEOUT_S))

    conn.send("ready")
    while True:
        request = conn.recv()
        if request is None:
            return
        kind, items, reps, n_groups = request
        for gold, pred in items if kind == "pairs" else ():
            conn.send(same(gold, pred))
        for s in items if kind == "group" else ():  # the group of the first representative it matches
            group = next((g for g, rep in reps if same(rep, s)), n_groups)
            conn.send(group)
            if group == n_groups:
                reps.append((group, s))
                n_groups += 1


_worker: list = []  # [process, connection] while a worker is alive


def _stop_worker() -> None:
    if _worker:
        process, conn = _worker
        _worker.clear()
        process.kill()
        process.join()
        conn.close()


atexit.register(_stop_worker)


def _worker_conn():
    import multiprocessing

    if not _worker:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that holds torch threads
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_verify_worker, args=(child,), daemon=True)
        process.start()
        child.close()
        _worker.extend([process, parent])
        if not parent.poll(120) or parent.recv() != "ready":
            _stop_worker()
            raise RuntimeError("the math-verify worker did not start; is math-verify installed?")
    return _worker[1]


def _verify_stream(kind: str, items: list) -> list:
    """One result per item ("pairs": bool; "group": group number, new groups numbered in order),
    each within DEADLINE_S per comparison. An item past its deadline kills the worker and counts as
    not equivalent (False, or a group of its own that nothing else joins); the rest go on in a
    fresh worker."""
    out: list = []
    reps: list = []  # group: (group number, answer) of each representative so far
    n_groups = 0
    while len(out) < len(items):
        conn = _worker_conn()
        conn.send((kind, items[len(out) :], list(reps), n_groups))
        try:
            while len(out) < len(items):
                if not conn.poll(DEADLINE_S * (1 + len(reps))):
                    raise TimeoutError
                out.append(conn.recv())
                if kind == "group" and out[-1] == n_groups:
                    reps.append((n_groups, items[len(out) - 1]))
                    n_groups += 1
        except (TimeoutError, EOFError, OSError):
            _stop_worker()
            out.append(False if kind == "pairs" else n_groups)
            n_groups += kind == "group"
    return out


def equivalent_pairs(pairs: list[tuple[str | None, str | None]]) -> list[bool]:
    """For each (gold, pred): whether pred is equivalent to gold. Equal normalized strings are
    equivalent; two different integers are not; everything else goes to math-verify
    (`verify(parse(gold), parse(pred))`, gold first) in a worker process, each call bounded in
    time. An empty answer is never equivalent; one that times out counts as not equivalent."""
    keys = [(normalize_answer(g), normalize_answer(p)) for g, p in pairs]
    result = [bool(g) and g == p for g, p in keys]
    todo = [
        i for i, (g, p) in enumerate(keys)
        if g and p and g != p and not (_INTEGER.fullmatch(g) and _INTEGER.fullmatch(p))
    ]
    for i, same in zip(todo, _verify_stream("pairs", [keys[i] for i in todo])):
        result[i] = same
    return result


def is_equivalent(gold: str | None, pred: str | None) -> bool:
    return equivalent_pairs([(gold, pred)])[0]


def group_answers(answers: list[str | None]) -> list[int]:
    """Group index of each answer (-1 for an empty one). Groups are numbered by first occurrence;
    each distinct normalized answer is parsed once and compared with group representatives only."""
    keys = [normalize_answer(a) for a in answers]
    distinct = list(dict.fromkeys(k for k in keys if k))
    if len(distinct) > 1 and not all(_INTEGER.fullmatch(k) for k in distinct):
        group = dict(zip(distinct, _verify_stream("group", distinct)))
    else:
        group = {k: g for g, k in enumerate(distinct)}
    return [group[k] if k else -1 for k in keys]


def majority_vote(answers: list[str | None]) -> tuple[str, float]:
    """(pseudo-label y, consistency p) over m = len(answers) answers. p = size of the largest group
    of equivalent answers / m, empty answers counted in m. Ties go to the group seen first; the
    label is that group's first answer as written. No answer at all: ('', 0.0)."""
    groups = group_answers(answers)
    counts = Counter(g for g in groups if g >= 0)
    if not counts:
        return "", 0.0
    best = min(counts, key=lambda g: (-counts[g], g))
    label = answers[groups.index(best)].strip()
    return label, counts[best] / len(answers)


# --- Rewards and the band filter ----------------------------------------------------------------


def uncertainty_reward(consistency: float) -> float:
    """r_unc = 1 - 2|p - 1/2|: 1 when the Solver splits evenly, 0 when it always or never agrees."""
    return 1.0 - 2.0 * abs(consistency - 0.5)


def in_band(consistency: float, delta: float = 0.25) -> bool:
    """|p - 1/2| <= delta (with a float tolerance, so p = 0.75 is inside for delta = 0.25)."""
    return abs(consistency - 0.5) <= delta + 1e-9


def challenger_reward(question: str | None, consistency: float, penalty: float) -> float:
    """r = max(0, r_unc - r_rep) when the completion held a question, else 0."""
    if question is None:
        return 0.0
    return max(0.0, uncertainty_reward(consistency) - penalty)


def pairwise_bleu(questions: list[str]):
    """B x B matrix of nltk's `sentence_bleu([q_j.split()], q_i.split())` with 4-gram uniform
    weights and smoothing method 1, computed for all pairs at once: clipped n-gram matches come
    from sparse products of (n-gram, occurrence) indicator matrices. Row i is the hypothesis."""
    import numpy as np
    from scipy import sparse

    tokens = [q.split() for q in questions]
    lengths = np.array([len(t) for t in tokens], dtype=np.float64)
    b = len(tokens)
    log_p = np.zeros((b, b))
    unigram_matches = None
    for n in range(1, 5):
        vocab: dict = {}
        rows, cols = [], []
        for i, toks in enumerate(tokens):
            seen: Counter = Counter()
            for gram in zip(*(toks[k:] for k in range(n))):
                seen[gram] += 1  # the c-th copy of a gram is its own feature: min(c_i, c_j) = dot
                rows.append(i)
                cols.append(vocab.setdefault((gram, seen[gram]), len(vocab)))
        x = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(b, max(len(vocab), 1)))
        matches = (x @ x.T).toarray()
        denominator = np.maximum(1.0, lengths - n + 1)[:, None]
        precision = np.where(matches > 0, matches, 0.1) / denominator  # method1: epsilon 0.1
        log_p += 0.25 * np.log(precision)
        if n == 1:
            unigram_matches = matches
    ref_len = lengths[None, :]
    hyp_len = np.broadcast_to(lengths[:, None], (b, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        brevity = np.where(hyp_len > ref_len, 1.0, np.exp(1.0 - ref_len / hyp_len))
    return np.where((unigram_matches > 0) & (hyp_len > 0), brevity * np.exp(log_p), 0.0)


def repetition_penalty(questions: list[str], threshold: float = 0.5, weight: float = 1.0) -> list[float]:
    """r_rep(i) = lambda * |C(i)| / B (DESIGN.md section 1): distances d(i, j) = 1 - BLEU(q_i, q_j)
    with the earlier question as hypothesis, symmetric, d(i, i) = 0; average-linkage clustering
    whose merges stop at distance tau (= threshold, merged while d < tau, as scikit-learn's
    `distance_threshold`); C(i) the cluster holding q_i, lambda = weight, B = len(questions)."""
    import numpy as np
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    b = len(questions)
    if b == 0:
        return []
    if b == 1:
        return [weight]
    upper = np.triu(1.0 - pairwise_bleu(questions), k=1)
    distance = upper + upper.T
    merges = linkage(squareform(distance, checks=False), method="average")
    parent = list(range(2 * b - 1))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k, (left, right, height, _) in enumerate(merges):
        if height < threshold:  # average-linkage heights never decrease: later merges are farther
            parent[root(int(left))] = parent[root(int(right))] = b + k
    sizes = Counter(root(i) for i in range(b))
    return [weight * sizes[root(i)] / b for i in range(b)]


# --- The micro-world's truth ----------------------------------------------------------------------

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
