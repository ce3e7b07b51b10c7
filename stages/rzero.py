"""The R-Zero method, shared by the stages: prompts, answer extraction, majority voting, the
Challenger's rewards, the band filter and the repetition penalty (DESIGN.md sections 1 and 3).

Plain functions with no heavy import at the top (numpy and scipy are imported where they are
used), so a stage's `--help` stays instant. Whether two answers are the same is equivalence.py's
job; this module only counts. Symbols follow the paper: m answers per question, consistency p,
band half-width delta, clustering cut tau, weight lambda.
"""

import re
from collections import Counter

import equivalence

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


# --- Majority vote -----------------------------------------------------------------------------


def majority_vote(answers: list[str | None]) -> tuple[str, float]:
    """(pseudo-label y, consistency p) over m = len(answers) answers. p = size of the largest group
    of equivalent answers / m, empty answers counted in m. Ties go to the group seen first; the
    label is that group's first answer as written. No answer at all: ('', 0.0)."""
    return vote(answers, equivalence.group_answers(answers))


def majority_votes(batches: list[list[str | None]]) -> list[tuple[str, float]]:
    """majority_vote of each answer list, computed over WORKERS worker processes."""
    return [vote(a, g) for a, g in zip(batches, equivalence.group_answers_many(batches))]


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


def challenger_rewards(completions: list[str], solve, m: int, tau: float = 0.5, penalty_weight: float = 1.0,
                       batch: list[str] | None = None, offset: int = 0) -> tuple[list[float], dict[str, float]]:
    """The Challenger's reward for one reward batch of completions (DESIGN.md section 1, step 1),
    and the batch's metrics. `solve(questions, m)` gives the frozen Solver's m completions for each
    question; each distinct question is asked once. For completion i with question q_i:
    p_i = consistency of the majority vote over its m final answers, r_i = max(0, r_unc(p_i) -
    r_rep(i)) with r_rep over the B parsed questions of the batch (duplicates included: they are
    what the penalty is for); no question: r_i = 0. When `completions` are one process's share of
    the batch, `batch` is the whole batch and `offset` where they start in it: r_rep is computed
    over the whole batch (the values one process would give), the votes for this share only."""
    questions = [extract_question(c) for c in completions]
    everyone = questions if batch is None else [extract_question(c) for c in batch]
    if everyone[offset : offset + len(questions)] != questions:
        raise ValueError(f"completions are not batch[{offset}:{offset + len(questions)}]")
    parsed = [q for q in questions if q]
    distinct = list(dict.fromkeys(parsed))
    votes = majority_votes([[last_boxed(a) for a in answers] for answers in solve(distinct, m)]) if distinct else []
    consistency = {q: p for q, (_, p) in zip(distinct, votes)}
    penalty = iter(repetition_penalty([q for q in everyone if q], tau=tau, penalty_weight=penalty_weight))
    penalties = [next(penalty) if q else 0.0 for q in everyone][offset : offset + len(questions)]
    rewards = [challenger_reward(q, consistency.get(q, 0.0), r) for q, r in zip(questions, penalties)]
    metrics = dict(
        format_rate=len(parsed) / len(questions),
        consistency=sum(consistency[q] for q in parsed) / max(1, len(parsed)),
        penalty=sum(penalties) / max(1, len(parsed)),
        zero_reward_share=sum(r == 0 for r in rewards) / len(rewards),
    )
    return rewards, metrics


def solver_rewards(completions: list[str], labels: list[str]) -> list[float]:
    """The Solver's reward (DESIGN.md section 1, step 5): 1 when the completion's last \\boxed{}
    answer is equivalent to its question's pseudo-label y, else 0 (no box: 0)."""
    answers = [last_boxed(c) for c in completions]
    return [float(ok) for ok in equivalence.equivalent_pairs(list(zip(labels, answers)))]


# --- Label-decay mitigations (off by default: the paper's method) ------------------------------------

MITIGATIONS = ("none", "adpo", "restrain")


def vote_weights(completions: list[str], answers: list[list[str | None]], consistency: list[float]) -> list[float]:
    """RESTRAIN's pseudo-label weighting (arXiv 2510.02172), as the Solver's reward: each completion
    scores the number of its question's m label-stage answers equivalent to its own final answer,
    over the majority's number p * m. So the majority answer scores 1, an answer half as many votes
    gave 1/2, an answer no vote gave (or no answer) 0. `answers[i]` and `consistency[i]` are
    completion i's question's m answers and p. (RESTRAIN weights every candidate label by its
    frequency; a constant factor on a group's rewards leaves GRPO's group-normalized advantages
    unchanged, so dividing by the majority's count is only a choice of scale.)"""
    finals = [last_boxed(c) for c in completions]
    same = iter(equivalence.equivalent_pairs([(a, f) for f, votes in zip(finals, answers) for a in votes]))
    counts = [sum(next(same) for _ in votes) for votes in answers]
    return [min(1.0, n / (p * len(votes))) if p > 0 else 0.0 for n, p, votes in zip(counts, consistency, answers)]


def solver_advantages(advantages: list[float], consistency: list[float], mitigation: str,
                      kappa: float = 0.5, penalty: float = 0.5) -> list[float]:
    """The Solver's GRPO advantages A_i after a label-decay mitigation, given the consistency p of
    each completion's question. none: unchanged. adpo (Agent0's ambiguity-aware advantage scaling,
    arXiv 2511.16043): A_i * p, so a label few votes agreed on moves the policy less (ADPO's other
    half, a clip bound that widens with ambiguity, is not applied: TRL's clip is one constant). restrain
    (RESTRAIN's negative rollout penalization, arXiv 2510.02172): when p < kappa the label is not
    trusted and every completion of that question gets A_i = -penalty (a push away from all of them)."""
    if mitigation == "none":
        return list(advantages)
    if mitigation == "adpo":
        return [a * p for a, p in zip(advantages, consistency)]
    if mitigation == "restrain":
        return [-penalty if p < kappa - 1e-9 else a for a, p in zip(advantages, consistency)]
    raise ValueError(f"mitigation {mitigation!r}: use one of {', '.join(MITIGATIONS)}")


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


def repetition_penalty(questions: list[str], tau: float = 0.5, penalty_weight: float = 1.0) -> list[float]:
    """r_rep(i) = lambda * |C(i)| / B (DESIGN.md section 1): distances d(i, j) = 1 - BLEU(q_i, q_j)
    with the earlier question as hypothesis, symmetric, d(i, i) = 0; average-linkage clustering
    whose merges stop at distance tau (merged while d < tau, as scikit-learn's
    `distance_threshold`); C(i) the cluster holding q_i, lambda = penalty_weight, B = len(questions)."""
    import numpy as np
    from scipy.cluster.hierarchy import linkage

    b = len(questions)
    if b == 0:
        return []
    if b == 1:
        return [penalty_weight]
    condensed = 1.0 - pairwise_bleu(questions)[np.triu_indices(b, k=1)]  # d(i, j), i < j, row by row
    merges = linkage(condensed, method="average")
    parent = list(range(2 * b - 1))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k, (left, right, height, _) in enumerate(merges):
        if height < tau:  # average-linkage heights never decrease: later merges are farther
            parent[root(int(left))] = parent[root(int(right))] = b + k
    sizes = Counter(root(i) for i in range(b))
    return [penalty_weight * sizes[root(i)] / b for i in range(b)]
