"""The R-Zero method core, shared by the stages: prompts, answer extraction, answer equivalence,
majority voting, the Challenger's rewards, the band filter and the micro-world's safe evaluator.

Plain functions with no heavy import at the top (math-verify, nltk, numpy and scipy are imported
where they are used), so a stage's `--help` stays instant. Symbols follow the paper:
m answers per question, consistency p, band half-width delta, clustering cut tau, weight lambda.
"""

import atexit
import math
import re
import threading
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

_SPACING = re.compile(r"\\[,;:! ]|\\(?:left|right)(?![A-Za-z])|\s+")  # not \leftarrow, \rightarrow
_E_NOTATION = re.compile(r"([+-]?\d+(?:\.\d+)?)[eE]([+-]?\d+)")
_INTEGER = re.compile(r"[+-]?\d{1,15}")
# A plain number: an integer, a decimal, \frac{a}{b} or a/b (normalized: no spaces, \dfrac is \frac).
_NUMBER = re.compile(r"([+-]?)(?:(\d{1,12}(?:\.\d{1,12})?|\.\d{1,12})|\\frac\{(\d{1,12})\}\{(\d{1,12})\}|(\d{1,12})/(\d{1,12}))")
NUMBER_GAP = 1e-3  # plain numbers further apart than this (relative) are different for math-verify too
VERIFY_TIMEOUT_S = 2  # math-verify's own bound on one parse or comparison (signal.alarm, in the worker)
DEADLINE_S = 5.0  # wall-clock bound per parse or comparison, enforced from outside by killing the worker


def _closing_brace(text: str, start: int) -> int:
    """Index of the `}` that closes the `{` at `start`; -1 when it never closes."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return -1


def normalize_answer(answer: str | None) -> str:
    """Cheap, meaning-preserving normalization for the string fast path ('' for no answer)."""
    if answer is None:
        return ""
    s = answer.strip().strip("$").strip()
    if s.startswith("\\text{") and s.endswith("}") and _closing_brace(s, len("\\text")) == len(s) - 1:
        s = s[len("\\text{") : -1]  # one \text{...} around everything, not '\text{a}\text{b}'
    s = _SPACING.sub("", s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").rstrip(".")
    if _INTEGER.fullmatch(s):
        s = str(int(s))  # '+007' and '7' are one answer
    return s


def _plain_number(s: str) -> Fraction | None:
    """The exact value of a normalized answer that is a plain number, else None."""
    m = _NUMBER.fullmatch(s)
    if not m:
        return None
    sign, decimal, frac_num, frac_den, slash_num, slash_den = m.groups()
    if decimal is not None:
        value = Fraction(decimal)
    else:
        num, den = (frac_num, frac_den) if frac_num is not None else (slash_num, slash_den)
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
    return -value if sign == "-" else value


def _numeric_verdict(gold: str, pred: str) -> bool | None:
    """math-verify's verdict on two plain numbers, without parsing them: equal values are
    equivalent ('0.5', '1/2', '\\frac{2}{4}'), values more than NUMBER_GAP apart (relative) are
    not. None when either is not a plain number or the two are too close to call ('0.333333' and
    '1/3' are equivalent for math-verify, which rounds): math-verify decides."""
    a, b = _plain_number(gold), _plain_number(pred)
    if a is None or b is None:
        return None
    if a == b:
        return True
    return False if abs(a - b) > NUMBER_GAP * max(abs(a), abs(b)) else None


def _provably_different(a, b) -> bool:
    """True only when `a - b` is certainly not zero, so math-verify's `simplify(a - b).is_zero`
    (its slowest step, 5-30 ms, and most of its time on text answers such as 'no solution', which
    parse as products of symbols) cannot be True. False means "not shown": math-verify decides.
    Values come from sympy's `evalf(30, strict=True)`, which raises rather than return a result
    it cannot vouch for (cancellation, a hidden zero); a value above 1e-6 is therefore nonzero.
    - No Float on either side (exact arithmetic): a - b is a constant with a nonzero value, or a
      polynomial in its free symbols with a nonzero value at one integer point (so not the zero
      polynomial).
    - Floats on one side only: the other side holds every free symbol, is exact and is a
      polynomial that takes two different values (nonconstant), which rounding of the constant
      side cannot cancel."""
    from sympy import Dummy, Expr, Float, Integer

    if not (isinstance(a, Expr) and isinstance(b, Expr)):
        return False  # sets, tuples, relations, matrices: left to math-verify

    def nonzero(e, point: dict) -> bool:
        try:
            value = abs(e.evalf(30, subs=point, strict=True))
        except ArithmeticError:  # PrecisionExhausted: cannot tell it from zero
            return False
        return bool(value.is_Number and value.is_finite and value > 1e-6)

    exact_a, exact_b = not a.has(Float), not b.has(Float)
    if exact_a and exact_b:
        d = a - b
        symbols = sorted(d.free_symbols, key=str)
        if symbols and not d.is_polynomial(*symbols):
            return False
        return nonzero(d, {x: Integer(1009 + 2 * k) for k, x in enumerate(symbols)})
    for side, other, exact in ((a, b, exact_a), (b, a, exact_b)):
        symbols = sorted(side.free_symbols, key=str)
        if exact and symbols and not other.free_symbols and side.is_polynomial(*symbols):
            at_u = {x: Dummy() for x in symbols}
            at_w = {x: Dummy() for x in symbols}
            point = {at_u[x]: Integer(1009 + 2 * k) for k, x in enumerate(symbols)}
            point.update({at_w[x]: Integer(1010 + 2 * k) for k, x in enumerate(symbols)})
            return nonzero(side.xreplace(at_u) - side.xreplace(at_w), point)
    return False


def _fast_symbolic_eq(original):
    """math-verify's `sympy_symbolic_eq` with `_provably_different` tried first: the same answers,
    sooner (it returns False exactly where the original could only return False)."""

    def symbolic_eq(a, b) -> bool:
        try:
            if _provably_different(a, b):
                return False
        except Exception:  # noqa: BLE001 - "not shown"; math-verify's timeout (a BaseException) passes
            pass
        return original(a, b)

    return symbolic_eq


def _verify_worker(conn) -> None:
    """Child process: answers one item at a time, so the parent can bound each one. math-verify's
    signal.alarm timeouts work here (its main thread); a hang in C code is the parent's to kill.
    Two shortcuts that change no answer: two different integers are not equivalent (as in the
    parent; such a pair is neither parsed nor verified), and math-verify's symbolic step is skipped
    where `_provably_different` shows it would fail. Parses and verdicts are cached for the
    worker's life; a parse that times out is cached as unparseable (math-verify lets its
    TimeoutException through), so it costs its 2 s once."""
    import logging

    import math_verify.grader
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    logging.disable(logging.WARNING)
    if hasattr(math_verify.grader, "sympy_symbolic_eq"):
        math_verify.grader.sympy_symbolic_eq = _fast_symbolic_eq(math_verify.grader.sympy_symbolic_eq)
    cache: dict[str, list] = {}  # normalized answer -> math-verify's parse
    verdicts: dict[tuple[str, str], bool] = {}  # (gold, pred) -> verify's answer

    def parsed(s: str) -> list:
        if s not in cache:
            if len(cache) > 100_000:
                cache.clear()
            try:
                e_notation = _E_NOTATION.fullmatch(s)  # 4.5e33 would parse as 4.5 * e * 33
                latex = f"{e_notation[1]}\\times10^{{{e_notation[2]}}}" if e_notation else s
                cache[s] = parse("\\boxed{" + latex + "}", parsing_timeout=VERIFY_TIMEOUT_S)
            except TimeoutException:  # a BaseException that parse lets through: unparseable, once
                cache[s] = []
        return cache[s]

    def same(gold: str, pred: str) -> bool:
        if gold != pred and _INTEGER.fullmatch(gold) and _INTEGER.fullmatch(pred):
            return False  # normalized integers: different strings, different numbers
        numeric = _numeric_verdict(gold, pred)
        if numeric is not None:
            return numeric
        if (gold, pred) not in verdicts:  # the same pair recurs across questions ('0' vs '1/2')
            if len(verdicts) > 500_000:
                verdicts.clear()
            g, p = parsed(gold), parsed(pred)
            verdicts[gold, pred] = bool(g and p and verify(g, p, timeout_seconds=VERIFY_TIMEOUT_S))
        return verdicts[gold, pred]

    conn.send("ready")
    while True:
        request = conn.recv()
        if request is None:
            return
        kind, items, reps, n_groups = request
        for gold, pred in items if kind == "pairs" else ():
            conn.send(same(gold, pred))
        for s in items if kind == "group" else ():  # the group of the first representative it matches
            group = n_groups
            if _plain_number(s) is None and reps:
                parsed(s)  # the newcomer first: a parse that hangs is charged to it, not to a representative
                conn.send(None)  # a tick after each step: the parent's clock bounds one step, not the item
            for k, (g, rep) in enumerate(reps):
                if k:
                    conn.send(None)
                if same(rep, s):
                    group = g
                    break
            conn.send(group)
            if group == n_groups:
                reps.append((group, s))
                n_groups += 1


WORKERS = 2  # worker processes for a batch of votes (majority_votes): one per core of a 2-core box
_workers: list[list] = [[] for _ in range(WORKERS)]  # per slot: [process, connection] while alive
_worker_locks = [threading.Lock() for _ in range(WORKERS)]  # one request at a time on each pipe


def _stop_worker(slot: int | None = None) -> None:
    """Kill the worker of `slot` (every worker when None)."""
    for worker in _workers if slot is None else [_workers[slot]]:
        if worker:
            process, conn = worker
            worker.clear()
            process.kill()
            process.join()
            conn.close()


atexit.register(_stop_worker)


def _worker_conn(slot: int = 0):
    import multiprocessing

    worker = _workers[slot]
    if worker and not worker[0].is_alive():
        _stop_worker(slot)  # died between calls (killed from outside, out of memory): start afresh
    if not worker:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that holds torch threads
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_verify_worker, args=(child,), daemon=True)
        process.start()
        child.close()
        worker.extend([process, parent])
        try:
            ready = parent.poll(120) and parent.recv() == "ready"
        except (EOFError, OSError):  # the child died while starting (e.g. math-verify missing)
            ready = False
        if not ready:
            _stop_worker(slot)
            raise RuntimeError("the math-verify worker did not start; is math-verify installed?")
    return worker[1]


def _verify_stream(kind: str, items: list, slot: int = 0) -> list:
    """One result per item ("pairs": bool; "group": group number, new groups numbered in order),
    each parse or comparison within DEADLINE_S (in group mode the worker ticks after each step).
    An item past its deadline kills the worker and counts as not equivalent (False, or a group of
    its own that nothing else joins); the rest go on in a fresh worker."""
    out: list = []
    reps: list = []  # group: (group number, answer) of each representative so far
    n_groups = 0
    with _worker_locks[slot]:
        while len(out) < len(items):
            conn = _worker_conn(slot)
            try:
                conn.send((kind, items[len(out) :], list(reps), n_groups))
                while len(out) < len(items):
                    if not conn.poll(DEADLINE_S):
                        raise TimeoutError
                    answer = conn.recv()
                    if answer is None:  # a tick: one parse or comparison done in time, more to come
                        continue
                    out.append(answer)
                    if kind == "group" and out[-1] == n_groups:
                        reps.append((n_groups, items[len(out) - 1]))
                        n_groups += 1
            except (TimeoutError, EOFError, OSError):
                _stop_worker(slot)
                out.append(False if kind == "pairs" else n_groups)
                n_groups += kind == "group"
            except BaseException:  # interrupted mid-stream: never leave unread answers in the pipe
                _stop_worker(slot)
                raise
    return out


def equivalent_pairs(pairs: list[tuple[str | None, str | None]]) -> list[bool]:
    """For each (gold, pred): whether pred is equivalent to gold. Equal normalized strings are
    equivalent; two different integers are not; everything else goes to math-verify
    (`verify(parse(gold), parse(pred))`, gold first) in a worker process, each call bounded in
    time. An empty answer is never equivalent; one that times out counts as not equivalent."""
    keys = [(normalize_answer(g), normalize_answer(p)) for g, p in pairs]
    result = [bool(g) and g == p for g, p in keys]
    todo = []
    for i, (g, p) in enumerate(keys):
        if g and p and g != p and not (_INTEGER.fullmatch(g) and _INTEGER.fullmatch(p)):
            numeric = _numeric_verdict(g, p)
            if numeric is None:
                todo.append(i)
            else:
                result[i] = numeric
    for i, same in zip(todo, _verify_stream("pairs", [keys[i] for i in todo])):
        result[i] = same
    return result


def is_equivalent(gold: str | None, pred: str | None) -> bool:
    return equivalent_pairs([(gold, pred)])[0]


def group_answers(answers: list[str | None], slot: int = 0) -> list[int]:
    """Group index of each answer (-1 for an empty one). Groups are numbered by first occurrence;
    each distinct normalized answer is compared with group representatives only: by value when
    both are plain numbers far enough apart or equal, else by math-verify, each parsed once."""
    keys = [normalize_answer(a) for a in answers]
    distinct = list(dict.fromkeys(k for k in keys if k))
    group = _group_plain_numbers(distinct)
    if group is None:
        group = dict(zip(distinct, _verify_stream("group", distinct, slot)))
    return [group[k] if k else -1 for k in keys]


def group_answers_many(batches: list[list[str | None]]) -> list[list[int]]:
    """group_answers of each answer list, the lists spread over WORKERS worker processes (results
    identical to one at a time; a batch of votes takes about 1/WORKERS of the time on idle cores)."""
    if len(batches) < 2:
        return [group_answers(a) for a in batches]
    from concurrent.futures import ThreadPoolExecutor

    out: list = [None] * len(batches)

    def work(slot: int) -> None:
        for i in range(slot, len(batches), WORKERS):
            out[i] = group_answers(batches[i], slot)

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(work, range(WORKERS)))
    return out


def _group_plain_numbers(distinct: list[str]) -> dict[str, int] | None:
    """group_answers without math-verify when every answer is a plain number and every comparison
    is decided by value (_numeric_verdict); None otherwise."""
    group: dict[str, int] = {}
    reps: list[str] = []
    for s in distinct:
        for g, rep in enumerate(reps):
            verdict = False if _INTEGER.fullmatch(rep) and _INTEGER.fullmatch(s) else _numeric_verdict(rep, s)
            if verdict is None:
                return None
            if verdict:
                group[s] = g
                break
        else:
            group[s] = len(reps)
            reps.append(s)
    return group


def majority_vote(answers: list[str | None]) -> tuple[str, float]:
    """(pseudo-label y, consistency p) over m = len(answers) answers. p = size of the largest group
    of equivalent answers / m, empty answers counted in m. Ties go to the group seen first; the
    label is that group's first answer as written. No answer at all: ('', 0.0)."""
    return vote(answers, group_answers(answers))


def majority_votes(batches: list[list[str | None]]) -> list[tuple[str, float]]:
    """majority_vote of each answer list, computed over WORKERS worker processes."""
    return [vote(a, g) for a, g in zip(batches, group_answers_many(batches))]


def vote(answers: list[str | None], groups: list[int]) -> tuple[str, float]:
    """majority_vote from the answers' groups (as group_answers gives them)."""
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
    has_unigram = None
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
        precision = (x @ x.T).toarray()  # clipped matches, turned into log precision in place
        if n == 1:
            has_unigram = precision > 0
        precision[precision == 0] = 0.1  # method1: epsilon 0.1 for a zero count
        precision /= np.maximum(1.0, lengths - n + 1)[:, None]
        np.log(precision, out=precision)
        precision *= 0.25
        log_p += precision
    ref_len = lengths[None, :]
    hyp_len = lengths[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        brevity = 1.0 - ref_len / hyp_len
    np.exp(brevity, out=brevity)
    np.copyto(brevity, 1.0, where=hyp_len > ref_len)
    bleu = np.exp(log_p, out=log_p)
    bleu *= brevity
    bleu[~(has_unigram & (hyp_len > 0))] = 0.0
    return bleu


def repetition_penalty(questions: list[str], threshold: float = 0.5, weight: float = 1.0) -> list[float]:
    """r_rep(i) = lambda * |C(i)| / B (DESIGN.md section 1): distances d(i, j) = 1 - BLEU(q_i, q_j)
    with the earlier question as hypothesis, symmetric, d(i, i) = 0; average-linkage clustering
    whose merges stop at distance tau (= threshold, merged while d < tau, as scikit-learn's
    `distance_threshold`); C(i) the cluster holding q_i, lambda = weight, B = len(questions)."""
    import numpy as np
    from scipy.cluster.hierarchy import linkage

    b = len(questions)
    if b == 0:
        return []
    if b == 1:
        return [weight]
    condensed = 1.0 - pairwise_bleu(questions)[np.triu_indices(b, k=1)]  # d(i, j), i < j, row by row
    merges = linkage(condensed, method="average")
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
