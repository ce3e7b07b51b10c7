"""Whether two final answers are the same answer: math-verify (`parse` + `verify`, gold first),
bounded in time and made fast, shared by the stages through rzero's vote and the Solver's reward.

Cheap paths decide where they cannot change math-verify's verdict (equal normalized strings, two
different integers, plain numbers compared by exact value); everything else goes to math-verify in
a worker process (its `signal.alarm` timeouts need a main thread), each parse or comparison within
a wall-clock deadline enforced from outside. Heavy imports (math-verify, sympy) live in the worker.

Pathological answers (50 kB of nesting, 10^{10^{10}}) are told apart before math-verify by a cheap
screen (`screen`), and an answer or pair that blew its bound anyway is remembered by this process
(a stage is one process), surviving worker restarts: either is then "different from everything
but an identical string" without asking math-verify again. Every tolerated failure is counted
(`failures`), so a stage can report how many verdicts were failures rather than answers.
"""

import atexit
import math
import os
import re
import threading
from collections import Counter
from fractions import Fraction

_SPACING = re.compile(r"\\[,;:! ]|\\(?:left|right)(?![A-Za-z])|\s+")  # not \leftarrow, \rightarrow
_E_NOTATION = re.compile(r"([+-]?\d+(?:\.\d+)?)[eE]([+-]?\d+)")
_INTEGER = re.compile(r"[+-]?\d{1,15}")
# A plain number: an integer, a decimal, \frac{a}{b} or a/b (normalized: no spaces, \dfrac is \frac).
_NUMBER = re.compile(r"([+-]?)(?:(\d{1,12}(?:\.\d{1,12})?|\.\d{1,12})"  # sign; integer or decimal
                     r"|\\frac\{(\d{1,12})\}\{(\d{1,12})\}|(\d{1,12})/(\d{1,12}))")  # or a fraction
NUMBER_GAP = 1e-3  # plain numbers further apart than this (relative) are different for math-verify too
VERIFY_TIMEOUT_S = 2  # math-verify's own bound on one parse or comparison (signal.alarm, in the worker)
DEADLINE_S = 5.0  # wall-clock bound per parse or comparison, enforced from outside by killing the worker

# The screen's thresholds (measured with math-verify 0.9 on one core): far above any competition
# answer (intervals, polynomials, matrices, sets are tens to a few hundred characters, nested 3-5
# deep), at or below where math-verify needs seconds or never finishes.
MAX_LENGTH = 1000  # characters of a normalized answer (a 1,100-character polynomial: 2 s to parse)
MAX_DEPTH = 12  # (), [] and {} nested together (parentheses 11 deep: ~1 s to parse, 20 deep: past 2 s)
MAX_DIGITS = 10**6  # digits of a power of a number (10^{10^{10}}, 9^{9^{9}}): comparing one never ends
MAX_FACTORIAL = 10**5  # largest n for n! ((10^{10})! never ends; 100000! takes 0.1 s)
STRIKES = 2  # comparisons past their bound, with different partners, that make an answer pathological


def _closing(text: str, start: int) -> int:
    """Index of the bracket that closes the one at `start` (same kind); -1 when it never closes."""
    opener, closer = text[start], {"{": "}", "(": ")", "[": "]"}[text[start]]
    depth = 0
    for i in range(start, len(text)):
        depth += (text[i] == opener) - (text[i] == closer)
        if depth == 0:
            return i
    return -1


def normalize_answer(answer: str | None) -> str:
    """Cheap, meaning-preserving normalization for the string fast path ('' for no answer)."""
    if answer is None:
        return ""
    s = answer.strip().strip("$").strip()
    if s.startswith("\\text{") and s.endswith("}") and _closing(s, len("\\text")) == len(s) - 1:
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
    (its slowest step, 5-40 ms, and most of its time on text answers such as 'no solution', which
    parse as products of symbols) cannot be True. False means "not shown": math-verify decides.
    Values are exact (a polynomial of degree 100 or less at an integer point) or come from sympy's
    `evalf(30, strict=True)`, which raises rather than return a result it cannot vouch for
    (cancellation, a hidden zero); a value above 1e-6 is therefore nonzero.
    - No Float on either side (exact arithmetic): a - b is a constant with a nonzero value, or a
      polynomial in its free symbols with a nonzero value at one integer point (so not the zero
      polynomial).
    - Floats, no free symbols: a - b is a constant more than 1e-6 away from zero relative to the
      larger side, which simplify's 15-digit Float arithmetic cannot round to zero.
    - Floats on one side only: the other side holds every free symbol, is exact and is a
      polynomial that takes two different values (nonconstant), which rounding of the constant
      side cannot cancel."""
    from sympy import Expr, Float, Integer, Pow

    if not (isinstance(a, Expr) and isinstance(b, Expr)):
        return False  # sets, tuples, relations, matrices: left to math-verify

    def value(e, point: dict):
        """|e| at `point`: exact where that is cheap, else evalf's; None when it cannot vouch."""
        if point and all(p.exp.is_Rational and abs(p.exp) <= 100 for p in e.atoms(Pow)):
            e, point = e.xreplace(point), {}  # a Rational for polynomials with rational coefficients
        if e.is_Rational:
            return abs(e)
        try:
            v = abs(e.evalf(30, subs=point, strict=True))
        except ArithmeticError:  # PrecisionExhausted: cannot tell it from zero
            return None
        return v if v.is_Number and v.is_finite else None

    def nonzero(e, point: dict, scale=None) -> bool:
        """|e| at `point` is not zero: an exact nonzero value, or above 1e-6 (times `scale`, which
        also asks for the threshold when e came out exact from arithmetic on Floats)."""
        v = value(e, point)
        return v is not None and bool(v != 0 if v.is_Rational and scale is None else v > 1e-6 * (scale or 1))

    exact_a, exact_b = not a.has(Float), not b.has(Float)
    if exact_a and exact_b:
        d = a - b
        symbols = sorted(d.free_symbols, key=str)
        if symbols and not d.is_polynomial(*symbols):
            return False
        return nonzero(d, {x: Integer(1009 + 2 * k) for k, x in enumerate(symbols)})
    if not a.free_symbols and not b.free_symbols:
        sizes = [value(a, {}), value(b, {})]
        return None not in sizes and nonzero(a - b, {}, max(1, *sizes))
    for side, other, exact in ((a, b, exact_a), (b, a, exact_b)):
        symbols = sorted(side.free_symbols, key=str)
        if exact and symbols and not other.free_symbols and side.is_polynomial(*symbols):
            at_u = {x: Integer(1009 + 2 * k) for k, x in enumerate(symbols)}
            at_w = {x: Integer(1010 + 2 * k) for k, x in enumerate(symbols)}
            if all(p.exp.is_Rational and abs(p.exp) <= 100 for p in side.atoms(Pow)):
                return nonzero(side.xreplace(at_u) - side.xreplace(at_w), {})
            from sympy import Dummy

            u, w = {x: Dummy() for x in symbols}, {x: Dummy() for x in symbols}
            point = {u[x]: at_u[x] for x in symbols} | {w[x]: at_w[x] for x in symbols}
            return nonzero(side.xreplace(u) - side.xreplace(w), point)
    return False


def _fast_symbolic_eq(original):
    """math-verify's `sympy_symbolic_eq` with `_provably_different` tried first: the same answers,
    sooner (it returns False exactly where the original could only return False)."""

    def symbolic_eq(a, b) -> bool:
        try:
            if _provably_different(a, b):
                return False
        except Exception:  # noqa: BLE001 - sympy raises many types on odd input; raised, math-verify's
            pass  # own handler would turn it into "different": "not shown", its step decides (its timeout passes)
        return original(a, b)

    return symbolic_eq


def _two_stage_parsing(create_parser):
    """latex2sympy's `create_parser` with ANTLR's two-stage parsing: the parser's `math()` tries
    SLL prediction first and falls back to full LL only when SLL raises. ANTLR guarantees that an
    SLL parse that succeeds is the tree LL would build (PredictionMode.SLL), so the answers are
    the same; intervals and tuples, which latex2sympy's grammar sends into LL's full-context
    prediction at every comma, parse in 2 ms instead of 40. Syntax errors (latex2sympy's listener
    raises a plain Exception) and ANTLR's own errors trigger the fallback; anything else, such as
    math-verify's timeout, goes through."""
    from antlr4.atn.PredictionMode import PredictionMode
    from antlr4.error.Errors import ParseCancellationException, RecognitionException

    def create(self, latex_str):
        parser = create_parser(self, latex_str)
        full_ll = parser.math

        def math():
            parser._interp.predictionMode = PredictionMode.SLL
            try:
                return full_ll()
            except Exception as error:  # noqa: BLE001 - the listener raises a plain Exception
                if type(error) is not Exception and not isinstance(error, (ParseCancellationException,
                                                                          RecognitionException)):
                    raise
            parser.reset()  # back to the first token
            parser._interp.predictionMode = PredictionMode.LL
            return full_ll()

        parser.math = math
        return parser

    return create


def _parsed_integer(s: str) -> list | None:
    """math-verify's parse of a normalized integer ('14', '-5'), without parsing: [Integer, text]
    (the same list, checked on 900 integers up to 15 digits; 2 ms of ANTLR saved on every integer
    that meets a non-numeric answer). None for anything else."""
    if not (_INTEGER.fullmatch(s) and s == str(int(s))):
        return None
    from sympy import Integer

    return [Integer(int(s)), s]


# --- The screen and the memory of pathological answers -----------------------------------------

_LITERAL = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_POWER_OF_NUMBER = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\^")
_LITERAL_BEFORE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)$")


def _opening(text: str, end: int) -> int:
    """Index of the bracket that opens the one closing at `end` (same kind); -1 when none does."""
    closer, opener = text[end], {"}": "{", ")": "(", "]": "["}[text[end]]
    depth = 0
    for i in range(end, -1, -1):
        depth += (text[i] == closer) - (text[i] == opener)
        if depth == 0:
            return i
    return -1


def _exponent(text: str, i: int) -> tuple[str, int] | None:
    """The exponent written at text[i] (after a `^`) and where it ends: a braced group, or one
    digit as TeX reads `10^10`; None for anything else."""
    if text[i : i + 1] == "{":
        end = _closing(text, i)
        return (text[i + 1 : end], end + 1) if end > 0 else None
    return (text[i], i + 1) if text[i : i + 1].isdigit() else None


def _log10(text: str) -> float | None:
    """log10 of the magnitude of `text` when it is a number or a tower of powers of numbers
    ('10^{10^{10}}', '-2^{64}'); None for anything else."""
    text = text.lstrip("+-")
    if _LITERAL.fullmatch(text):
        value = float(text)  # inf past 1e308: past every bound below anyway
        return math.log10(value) if value > 0 else -math.inf
    base = _LITERAL.match(text)
    exponent = _exponent(text, base.end() + 1) if base and text[base.end() : base.end() + 1] == "^" else None
    return _power_log10(base[0], exponent[0]) if exponent and exponent[1] == len(text) else None


def _power_log10(base: str, exponent: str) -> float | None:
    """log10 of |base ^ exponent|, the base a number and the exponent a number or a tower."""
    e, b = _log10(exponent), float(base)
    if e is None:
        return None
    if b in (0.0, 1.0):
        return 0.0
    return (10.0**e if e < 300 else math.inf) * abs(math.log10(b))


def _depth(text: str) -> int:
    """How deep (), [] and {} nest, counted together."""
    if sum(map(text.count, "([{")) <= MAX_DEPTH:
        return 0  # cannot be deeper than the screen's bound: not worth the walk
    depth = deepest = 0
    for c in text:
        if c in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in ")]}":
            depth -= 1
    return deepest


def screen(answer: str) -> str | None:
    """Why a normalized answer is pathological, told without math-verify, or None for an ordinary
    answer: 'length' past MAX_LENGTH characters, 'nesting' past MAX_DEPTH, 'power' for a power of a
    number (a tower of them too, anywhere in the answer) past MAX_DIGITS digits, 'factorial' for n!
    with n past MAX_FACTORIAL. A screened answer is different from everything but itself."""
    if len(answer) > MAX_LENGTH:
        return "length"
    if _depth(answer) > MAX_DEPTH:
        return "nesting"
    for m in _POWER_OF_NUMBER.finditer(answer):
        exponent = _exponent(answer, m.end())
        digits = _power_log10(m[1], exponent[0]) if exponent else None
        if digits is not None and digits > MAX_DIGITS:
            return "power"
    for i in (m.start() for m in re.finditer("!", answer)):
        if answer[i - 1 : i] in (")", "}"):
            start = _opening(answer, i - 1)
            value = _log10(answer[start + 1 : i - 1]) if start >= 0 else None
        else:
            literal = _LITERAL_BEFORE.search(answer, 0, i)
            value = _log10(literal[1]) if literal else None
        if value is not None and value > math.log10(MAX_FACTORIAL):
            return "factorial"
    return None


_lock = threading.Lock()  # the counts and the memory below, shared by the vote's threads
_counts: Counter = Counter()
_pathological: set[str] = set()  # normalized answers screened out, or whose parse blew its bound
_failed_pairs: set[tuple[str, str]] = set()  # (gold, pred) whose comparison blew its bound
_strikes: Counter = Counter()  # answer -> comparisons past their bound it was part of
_verdicts: dict[tuple[str, str], bool] = {}  # (gold, pred) -> math-verify's verdict, from any worker
FAILURE_KEYS = ("checked", "failed", "timeouts", "math_verify_timeouts", "worker_deaths", "screened")


def _count(key: str, n: int = 1) -> None:
    with _lock:
        _counts[key] += n


def failures() -> dict[str, int]:
    """Counts since this process started (a stage is one process), a copy:
    checked: items math-verify was asked about (a pair, or a distinct answer in a vote);
    failed: of those, items whose verdict came from a failure below, not from math-verify;
    timeouts: parses or comparisons cut at DEADLINE_S (the worker killed and restarted);
    math_verify_timeouts: parses or comparisons stopped by math-verify's own VERIFY_TIMEOUT_S;
    worker_deaths: workers that died on their own (out of memory, a crash);
    screened: answers (one per vote) or pairs decided without math-verify as pathological.
    Every failure counts as "not equivalent"."""
    with _lock:
        return {key: _counts[key] for key in FAILURE_KEYS}


def failure_note(counts: dict[str, int]) -> str:
    """The closing-line fragment for `failures()`; loud when every check failed."""
    note = (f"verifier timeouts {counts['timeouts'] + counts['math_verify_timeouts']} | "
            f"worker deaths {counts['worker_deaths']} | screened {counts['screened']}")
    if counts["checked"] and counts["failed"] == counts["checked"]:
        note = f"VERIFIER FAILED ON ALL {counts['checked']} CHECKS (all counted as not equivalent) | {note}"
    return note


def forget() -> None:
    """Forget what this process learned: the answers and pairs remembered as pathological (the
    screen still applies) and the workers' verdicts (a worker still has its own cache)."""
    with _lock:
        _pathological.clear()
        _failed_pairs.clear()
        _strikes.clear()
        _verdicts.clear()


def _cheap_verdict(gold: str, pred: str) -> bool | None:
    """The verdict on two different normalized answers where math-verify's cannot differ: two
    integers differ, plain numbers are compared by value (_numeric_verdict); None otherwise."""
    if _INTEGER.fullmatch(gold) and _INTEGER.fullmatch(pred):
        return False
    return _numeric_verdict(gold, pred)


def _known(gold: str, pred: str) -> bool | None:
    """A verdict already known to this process: False for a pair that blew its bound, else what a
    worker answered; None when there is none."""
    return False if (gold, pred) in _failed_pairs else _verdicts.get((gold, pred))


def _learn(gold: str, pred: str, verdict: bool) -> None:
    if (gold, pred) not in _failed_pairs:
        if len(_verdicts) > 1_000_000:
            _verdicts.clear()
        _verdicts[gold, pred] = verdict


def _is_pathological(s: str) -> bool:
    if s in _pathological:
        return True
    if screen(s) is None:
        return False
    with _lock:
        _pathological.add(s)
    return True


def _blame(step: tuple | None) -> None:
    """Remember what blew its bound: the answer of a parse, or the pair of a comparison, whose two
    sides get a strike each (an answer with STRIKES is remembered too). Plain numbers never are:
    they parse instantly, the other side is to blame."""
    if step is None:
        return
    with _lock:
        if step[0] == "parse":
            suspects = [step[1]]
        else:
            _failed_pairs.add(step[1:])
            _strikes.update(step[1:])
            suspects = [s for s in step[1:] if _strikes[s] >= STRIKES]
        _pathological.update(s for s in suspects if _plain_number(s) is None)


# --- The worker processes ----------------------------------------------------------------------


def _verify_worker(conn) -> None:
    """Child process: answers one item at a time, so the parent can bound each step. It announces
    each parse and comparison it hands to math-verify (the parent's clock bounds each one; a hang
    in C code is the parent's to kill) and reports math-verify's own timeouts, which math-verify
    logs and turns into "unparseable" or "different". Shortcuts that change no answer: two
    different integers are not equivalent (as in the parent), math-verify's symbolic step is
    skipped where `_provably_different` shows it would fail, integers are built without parsing
    (`_parsed_integer`) and latex2sympy parses in two stages (`_two_stage_parsing`). Parses and
    verdicts are cached for the worker's life; verdicts the parent knows come with each request."""
    import logging

    import latex2sympy2_extended.latex2sympy2
    import math_verify.grader
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    slow: list[bool] = []  # math-verify's own timeouts during the current step

    class CountTimeouts(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if str(record.msg).startswith("Timeout during"):  # parse's and verify's warnings
                slow.append(True)

    logging.getLogger("math_verify").addHandler(CountTimeouts())
    logging.getLogger("math_verify").propagate = False
    logging.getLogger().addHandler(logging.NullHandler())  # other warnings: not to the stage's stderr
    if hasattr(math_verify.grader, "sympy_symbolic_eq"):
        math_verify.grader.sympy_symbolic_eq = _fast_symbolic_eq(math_verify.grader.sympy_symbolic_eq)
    latex2sympy = latex2sympy2_extended.latex2sympy2._Latex2Sympy
    latex2sympy.create_parser = _two_stage_parsing(latex2sympy.create_parser)
    cache: dict[str, list] = {}  # normalized answer -> math-verify's parse
    verdicts: dict[tuple[str, str], bool] = {}  # (gold, pred) -> verify's answer

    def step(what: tuple, work):
        conn.send(what)
        result = work()
        if slow:
            slow.clear()
            conn.send(("slow",))
        return result

    def parse_now(s: str) -> list:
        if (integer := _parsed_integer(s)) is not None:
            return integer
        e_notation = _E_NOTATION.fullmatch(s)  # 4.5e33 would parse as 4.5 * e * 33
        latex = f"{e_notation[1]}\\times10^{{{e_notation[2]}}}" if e_notation else s
        try:
            return parse("\\boxed{" + latex + "}", parsing_timeout=VERIFY_TIMEOUT_S)
        except TimeoutException:  # the alarm went off outside parse's own handler: unparseable too
            slow.append(True)
            return []

    def parsed(s: str) -> list:
        if s not in cache:
            if len(cache) > 100_000:
                cache.clear()
            cache[s] = step(("parse", s), lambda: parse_now(s))
        return cache[s]

    def same(gold: str, pred: str) -> bool:
        cheap = _cheap_verdict(gold, pred)
        if cheap is None:
            cheap = known.get((gold, pred))  # from another worker, or past its bound: False
        if cheap is not None:
            return cheap
        if (gold, pred) not in verdicts:  # the same pair recurs across questions ('0' vs '1/2')
            if len(verdicts) > 500_000:
                verdicts.clear()
            g, p = parsed(gold), parsed(pred)
            verdicts[gold, pred] = bool(g and p) and bool(
                step(("compare", gold, pred), lambda: verify(g, p, timeout_seconds=VERIFY_TIMEOUT_S)))
        return verdicts[gold, pred]

    conn.send("ready")
    while True:
        request = conn.recv()
        if request is None:
            return
        kind, items, reps, n_groups, known = request
        for gold, pred in items if kind == "pairs" else ():
            conn.send(same(gold, pred))
        for s in items if kind == "group" else ():  # the group of the first representative it matches
            group = next((g for g, rep in reps if same(rep, s)), n_groups)
            conn.send(group)
            if group == n_groups:
                reps.append((group, s))
                n_groups += 1


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


WORKERS = max(1, _cpus())  # worker processes for a batch of votes (group_answers_many): one per CPU
_workers: list[list] = [[] for _ in range(WORKERS)]  # per slot: [process, connection] while alive
_worker_locks = [threading.Lock() for _ in range(WORKERS)]  # one request at a time on each pipe


def stop_workers(slot: int | None = None) -> None:
    """Kill the worker of `slot` (every worker when None); the next call starts a fresh one."""
    for worker in _workers if slot is None else [_workers[slot]]:
        if worker:
            process, conn = worker
            worker.clear()
            process.kill()
            process.join()
            conn.close()


atexit.register(stop_workers)


def worker_process(slot: int = 0):
    """The worker process of `slot`, None when none is running."""
    return _workers[slot][0] if _workers[slot] else None


def worker_connection(slot: int = 0):
    """The pipe to the worker of `slot`, started first when there is none (1-2 s)."""
    import multiprocessing

    worker = _workers[slot]
    if worker and not worker[0].is_alive():
        _count("worker_deaths")  # died between calls (killed from outside, out of memory)
        stop_workers(slot)
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
            stop_workers(slot)
            raise RuntimeError("the math-verify worker did not start; is math-verify installed?")
    return worker[1]


def _verify_stream(kind: str, items: list, slot: int = 0) -> list:
    """One result per item ("pairs": bool; "group": group number, new groups numbered in order),
    each parse or comparison within DEADLINE_S, each verdict learned for the whole process. A
    step past its deadline kills the worker and is remembered (_blame); its item counts as not
    equivalent (False, or a group of its own that nothing else joins) and the rest go on in a
    fresh worker, which is never handed an answer remembered as pathological."""
    out: list = []
    reps: list = []  # group: (group number, answer) of each representative, as the worker has them
    n_groups = 0
    with _worker_locks[slot]:
        while len(out) < len(items):
            conn = worker_connection(slot)
            step, failed = None, False  # the step under way; whether the current item met a failure
            todo = items[len(out) :]
            reps = [(g, rep) for g, rep in reps if rep not in _pathological]
            order = [rep for _, rep in reps] + todo if kind == "group" else []
            known = {(a, b): v for i, a in enumerate(order) for b in order[i + 1 :] if (v := _known(a, b)) is not None}
            try:
                conn.send((kind, todo, reps, n_groups, known))
                while len(out) < len(items):
                    if not conn.poll(DEADLINE_S):
                        raise TimeoutError
                    answer = conn.recv()
                    if type(answer) is tuple:  # a step announced, or math-verify's own timeout in it
                        if answer[0] == "slow":
                            _count("math_verify_timeouts")
                            _blame(step)
                            failed = True
                        else:
                            step = answer
                        continue
                    item = items[len(out)]
                    out.append(answer)
                    _count("checked")
                    _count("failed", failed)
                    if kind == "pairs" and not failed:
                        _learn(*item, answer)
                    elif kind == "group" and not failed:  # compared with each representative up to its own
                        for g, rep in reps:
                            _learn(rep, item, g == answer)
                            if g == answer:
                                break
                    if kind == "group" and answer == n_groups:
                        reps.append((n_groups, item))
                        n_groups += 1
                    step, failed = None, False
            except (TimeoutError, EOFError, OSError) as error:  # past the deadline, or the worker died
                if isinstance(error, TimeoutError):
                    _count("timeouts")
                    _blame(step)
                else:
                    _count("worker_deaths")
                stop_workers(slot)
                out.append(False if kind == "pairs" else n_groups)
                _count("checked")
                _count("failed")
                n_groups += kind == "group"
            except BaseException:  # interrupted mid-stream: never leave unread answers in the pipe
                stop_workers(slot)
                raise
    return out


def equivalent_pairs(pairs: list[tuple[str | None, str | None]]) -> list[bool]:
    """For each (gold, pred): whether pred is equivalent to gold. Equal normalized strings are
    equivalent; two different integers are not; a pathological answer (screened, or remembered)
    is equivalent to nothing else; everything else goes to math-verify (`verify(parse(gold),
    parse(pred))`, gold first) in a worker process, each step bounded in time, unless a worker
    answered for that pair before. An empty answer is never equivalent; one that times out counts
    as not equivalent."""
    keys = [(normalize_answer(g), normalize_answer(p)) for g, p in pairs]
    result = [bool(g) and g == p for g, p in keys]
    todo = []
    for i, (g, p) in enumerate(keys):
        if g and p and g != p:
            verdict = _cheap_verdict(g, p)
            if verdict is None and (_is_pathological(g) or _is_pathological(p) or (g, p) in _failed_pairs):
                _count("screened")
                verdict = False
            if verdict is None:
                verdict = _verdicts.get((g, p))
            if verdict is None:
                todo.append(i)
            else:
                result[i] = verdict
    for i, same in zip(todo, _verify_stream("pairs", [keys[i] for i in todo])):
        result[i] = same
    return result


def is_equivalent(gold: str | None, pred: str | None) -> bool:
    return equivalent_pairs([(gold, pred)])[0]


def group_answers(answers: list[str | None], slot: int = 0) -> list[int]:
    """Group index of each answer (-1 for an empty one). Groups are numbered by first occurrence;
    each distinct normalized answer is compared with group representatives only: by value when
    both are plain numbers far enough apart or equal, by a verdict a worker gave before, else by
    math-verify, each parsed once. A pathological answer (screened, or remembered) is a group of
    its own, math-verify not asked."""
    keys = [normalize_answer(a) for a in answers]
    distinct = list(dict.fromkeys(k for k in keys if k))
    group = _group_known(distinct)
    if group is None:
        odd = {s for s in distinct if _is_pathological(s)}
        _count("screened", len(odd))
        rest = [s for s in distinct if s not in odd]
        label = _group_known(rest, _known)
        if label is None:
            label = dict(zip(rest, _verify_stream("group", rest, slot)))
        numbers: dict = {}  # renumbered by first occurrence, the odd ones among the rest
        group = {s: numbers.setdefault(("odd", s) if s in odd else label[s], len(numbers)) for s in distinct}
    return [group[k] if k else -1 for k in keys]


def group_answers_many(batches: list[list[str | None]]) -> list[list[int]]:
    """group_answers of each answer list, the lists spread over WORKERS worker processes (results
    identical to one at a time; a batch of votes takes about 1/WORKERS of the time on idle cores)."""
    n = min(WORKERS, len(batches))
    if n < 2:
        return [group_answers(a) for a in batches]
    from concurrent.futures import ThreadPoolExecutor

    out: list = [None] * len(batches)

    def work(slot: int) -> None:
        for i in range(slot, len(batches), n):
            out[i] = group_answers(batches[i], slot)

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(work, range(n)))
    return out


def _group_known(distinct: list[str], known=None) -> dict[str, int] | None:
    """group_answers without a worker when every comparison is decided by _cheap_verdict or by
    `known(rep, answer)` (a verdict or None); None otherwise."""
    group: dict[str, int] = {}
    reps: list[str] = []
    for s in distinct:
        for g, rep in enumerate(reps):
            verdict = _cheap_verdict(rep, s)
            if verdict is None and known is not None:
                verdict = known(rep, s)
            if verdict is None:
                return None
            if verdict:
                group[s] = g
                break
        else:
            group[s] = len(reps)
            reps.append(s)
    return group
