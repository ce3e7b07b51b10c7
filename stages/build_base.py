"""Build the micro-world base model: a tiny Qwen3 that has learned synthetic integer arithmetic in
exactly the Challenger and Solver formats (DESIGN.md sections 3 and 5), imperfect on purpose.

Reads nothing and needs no network. Writes a model folder that `AutoModelForCausalLM` and
`AutoTokenizer` load with no extra arguments (ChatML chat template, pad token, left padding),
plus `heldout.jsonl` (question, answer, num_ops: questions no training step ever sees, not even
as an intermediate line of a worked solution), `summary.json` and `DONE`. The folder is named by
a hash of the recipe, so a second build of the same recipe is a cache hit.

The world: questions like `What is 7 + 3 * 4 - 5?` with 1-4 operations on operands 0-9, usual
precedence, every partial result within |v| <= 99. Solutions rewrite the expression one operation
at a time, and the order is sampled: products in any order, then the first term with any other,
e.g. `7 + 12 - 5 = 19 - 5 = 14` or `7 + 12 - 5 = 7 - 5 + 12 = 2 + 12 = 14`. Several paths per question are what
lets a majority of sampled answers beat the greedy one (self-consistency), the regime the R-Zero
loop needs; one fixed path makes the greedy answer the mode of the samples.

The base is checked on the held-out set (greedy accuracy by number of operations; at T = 1.0:
single-sample and majority-of-m accuracy, label accuracy by vote share, and format rates); the
figures go in summary.json and in the closing line.

Examples:
  python stages/build_base.py                                  # full recipe, cached; prints its folder
  python stages/build_base.py --quick --cache-dir /tmp/rzero   # seconds: formats only, for plumbing tests
"""

import hashlib
import json
import math
import random
import time
from collections import Counter
from pathlib import Path

import typer

import artifacts
import rzero

RECIPE = dict(
    operand_max=9,          # operands 0-9: single-digit facts, learned from every worked line
    operators="+-*",        # * gives precedence, so paths differ in which facts they use
    value_bound=99,         # every product and every sum of |terms| stays two-digit
    heldout_per_ops=200,    # held-out questions per number of operations (1..4)
    ops_weights=(1, 2, 2, 2),  # Solver training questions by number of operations
    challenger_ops_weights=(2, 3, 3, 2),  # questions the untrained Challenger writes: mostly 1-3 operations
    careful_share=0.45,     # Solver examples worked line by line; the rest state the answer at once, so greedy does
    challenger_share=0.1,   # share of training examples in the Challenger format
    vocab_size=1024,        # byte-level BPE; merges may cross spaces, so the fixed prompts are a few tokens
    hidden_size=192, num_layers=3, num_heads=3, head_dim=64, ff_size=768,  # 1.7M parameters; head_dim 64 for vLLM
    steps=1100,             # optimizer steps (~7 min on 2 cores)
    batch_size=64,          # sequences per step (random mix; length buckets slowed learning 3x here)
    learning_rate=2e-3,     # AdamW, linear warmup then cosine to 10%
    warmup_steps=50,
    seed=0,
)
WORLD_VERSION = 3  # bump whenever the world, the solution format or the training loop changes
QUICK = dict(RECIPE, steps=40, heldout_per_ops=20, hidden_size=64, ff_size=256, num_layers=2, num_heads=1)
CHAT_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)
DEFAULT_CACHE = Path.home() / ".cache" / "rzero"

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


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


def example(rng: random.Random, recipe: dict, heldout: set[str]) -> tuple[list[dict], str]:
    """(prompt messages, completion) of one training example, resampled while the question or any
    expression left along its solution is a held-out question."""
    challenger = rng.random() < recipe["challenger_share"]
    weights = recipe["challenger_ops_weights" if challenger else "ops_weights"]
    num_ops = rng.choices(range(1, 5), weights=weights)[0]
    while True:
        expression, terms = sample_expression(rng, num_ops, recipe)
        lines = solution_lines(rng, terms)
        if expression not in heldout and not any(line.split(": ")[-1] in heldout for line in lines):
            break
    answer = lines[-1].split(" = ")[-1]
    question = question_text(expression)
    if challenger:
        return rzero.challenger_messages(), f"<question>{question}</question>\n\\boxed{{{answer}}}"
    if rng.random() < recipe["careful_share"]:  # worked line by line, announced by its first words
        return rzero.solver_messages(question), "Step by step:\n" + "\n".join(lines) + f"\n\\boxed{{{answer}}}"
    return rzero.solver_messages(question), f"{expression} = {answer}\n\\boxed{{{answer}}}"


def heldout_questions(rng: random.Random, recipe: dict) -> list[dict]:
    rows = []
    for num_ops in range(1, 5):
        seen: set[str] = set()
        while len(seen) < recipe["heldout_per_ops"]:
            expression, _ = sample_expression(rng, num_ops, recipe)
            if expression not in seen:
                seen.add(expression)
                answer = rzero.evaluate_arithmetic(question_text(expression))
                rows.append(dict(question=question_text(expression), answer=rzero.format_number(answer), num_ops=num_ops))
    return rows


# --- Tokenizer and model ---------------------------------------------------------------------------


def build_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r" ?[0-9]"), behavior="isolated"),  # every digit its own token
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        padding_side="left", chat_template=CHAT_TEMPLATE,
    )


def recipe_hash(recipe: dict) -> str:
    """Names the build: the recipe, the prompts and template it is trained on, and WORLD_VERSION."""
    what = [recipe, WORLD_VERSION, CHAT_TEMPLATE, rzero.CHALLENGER_SYSTEM, rzero.CHALLENGER_USER, rzero.SOLVER_SYSTEM]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


# --- Checks ----------------------------------------------------------------------------------------


def measure(model, tokenizer, rows: list[dict], m: int, seed: int, challenger_samples: int = 200) -> dict:
    """Held-out figures: greedy accuracy by number of operations; at T = 1.0, single-sample and
    majority-of-m accuracy and label accuracy by vote share; boxed and <question> format rates."""
    import torch

    def generate(prompts: list[str], n: int, greedy: bool) -> list[str]:
        outs = []
        for i in range(0, len(prompts), 128):
            enc = tokenizer(prompts[i : i + 128], return_tensors="pt", padding=True)
            sampling = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, num_return_sequences=n,
                                     pad_token_id=tokenizer.pad_token_id, **sampling)
            outs += tokenizer.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
        return outs

    max_new_tokens = 96  # the longest worked solution is about 80 tokens
    torch.manual_seed(seed)
    stats: dict = {"greedy_accuracy": {}, "sampled": {}}
    greedy_boxed: list[bool] = []
    for num_ops in range(1, 5):
        subset = [r for r in rows if r["num_ops"] == num_ops]
        prompts = [rzero.render_prompt(tokenizer, rzero.solver_messages(r["question"])) for r in subset]
        greedy = generate(prompts, 1, True)
        stats["greedy_accuracy"][num_ops] = sum(rzero.last_boxed(o) == r["answer"] for o, r in zip(greedy, subset)) / len(subset)
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
            label_accuracy_by_votes={f"{v}/{m}": dict(questions=n, label_correct=c) for v, (n, c) in sorted(by_votes.items())},
        )
    prompt = rzero.render_prompt(tokenizer, rzero.challenger_messages())
    challenger = generate([prompt] * challenger_samples, 1, False)
    questions = [rzero.extract_question(o) for o in challenger]
    stats["challenger_question_rate"] = sum(q is not None for q in questions) / len(questions)
    stats["challenger_scorable_rate"] = sum(rzero.evaluate_arithmetic(q) is not None for q in questions) / len(questions)
    sampled = stats["sampled"].values()  # at T = 1.0 when measured, else greedy (--quick)
    stats["solver_boxed_rate"] = (sum(s["boxed_rate"] for s in sampled) / len(sampled) if sampled
                                  else sum(greedy_boxed) / len(greedy_boxed))
    return stats


# --- Stage -----------------------------------------------------------------------------------------


@app.command()
def main(
    cache_dir: Path = typer.Option(DEFAULT_CACHE, help="Folder that holds built bases, one subfolder per recipe hash.", rich_help_panel="Outputs"),
    output: Path = typer.Option(None, help="Write here instead of <cache-dir>/micro-<hash> (no caching by hash).", rich_help_panel="Outputs"),
    quick: bool = typer.Option(False, help="Tiny recipe that builds in seconds: learns the formats, not the arithmetic (plumbing tests).", rich_help_panel="Method"),
    seed: int = typer.Option(0, help="Seed of the world, the data order and the initialization.", rich_help_panel="Method"),
    threads: int = typer.Option(2, help="torch CPU threads.", rich_help_panel="Training"),
    overwrite: bool = typer.Option(False, help="Rebuild even if a complete build exists.", rich_help_panel="Outputs"),
):
    """Build (or find in the cache) the micro-world base; print its folder on stdout."""
    recipe = dict(QUICK if quick else RECIPE, seed=seed)
    name = f"micro-{'quick-' if quick else ''}{recipe_hash(recipe)}"
    output = output or cache_dir / name
    artifacts.log(f"build_base: recipe {name} -> {output}")
    partial = artifacts.begin(output, overwrite)
    if partial is None:
        artifacts.log(f"build_base: {output} is complete, skipping (--overwrite to rebuild)")
        print(output)
        return

    import torch
    from tqdm import tqdm
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(recipe["seed"])
    rng = random.Random(recipe["seed"])
    t0 = time.time()
    heldout = heldout_questions(rng, recipe)
    held_expressions = {r["question"][len("What is ") : -1] for r in heldout}

    corpus = [example(rng, recipe, held_expressions) for _ in range(4000)]
    tokenizer = build_tokenizer([CHAT_TEMPLATE] + [rzero.render_prompt(_ChatML, m) + c for m, c in corpus], recipe["vocab_size"])
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=recipe["hidden_size"], intermediate_size=recipe["ff_size"],
        num_hidden_layers=recipe["num_layers"], num_attention_heads=recipe["num_heads"], num_key_value_heads=1,
        head_dim=recipe["head_dim"], max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen3ForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["learning_rate"], weight_decay=0.01, betas=(0.9, 0.95))
    prompt_cache: dict[str, list[int]] = {}
    losses = []
    model.train()
    for step in tqdm(range(recipe["steps"]), desc="build_base", unit="step", mininterval=5):
        warmup = min(1.0, (step + 1) / recipe["warmup_steps"])
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / recipe["steps"]))
        for group in optimizer.param_groups:
            group["lr"] = recipe["learning_rate"] * warmup * cosine
        batch = [example(rng, recipe, held_expressions) for _ in range(recipe["batch_size"])]
        prompts = [rzero.render_prompt(tokenizer, m) for m, _ in batch]
        completions = tokenizer([c + "<|im_end|>" for _, c in batch], add_special_tokens=False).input_ids
        for p in set(prompts) - prompt_cache.keys():
            prompt_cache[p] = tokenizer(p, add_special_tokens=False).input_ids
        rows = [prompt_cache[p] + c for p, c in zip(prompts, completions)]
        length = max(map(len, rows))
        ids = torch.full((len(rows), length), tokenizer.pad_token_id)
        labels = torch.full((len(rows), length), -100)  # loss on completions only
        for i, (p, row) in enumerate(zip(prompts, rows)):
            ids[i, : len(row)] = torch.tensor(row)  # right padding: causal attention never sees it
            labels[i, len(prompt_cache[p]) : len(row)] = ids[i, len(prompt_cache[p]) : len(row)]
        with torch.autocast("cpu", dtype=torch.bfloat16):  # 1.6x faster than fp32 here
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    train_s = time.time() - t0

    model.eval()
    stats = measure(model, tokenizer, heldout, m=0 if quick else 10, seed=recipe["seed"], challenger_samples=20 if quick else 200)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    with open(partial / "heldout.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in heldout)
    summary = dict(
        stage="build_base", recipe=recipe, name=name, parameters=sum(p.numel() for p in model.parameters()),
        train_seconds=round(train_s, 1), total_seconds=round(time.time() - t0, 1),
        final_loss=sum(losses[-50:]) / len(losses[-50:]), heldout_questions=len(heldout), **stats,
    )
    artifacts.finish(partial, output, summary)
    acc = stats["greedy_accuracy"]
    two = stats["sampled"].get(2, dict(single_accuracy=math.nan, majority_accuracy=math.nan))
    artifacts.log(
        f"build_base: done in {summary['total_seconds']:.0f} s | greedy 1/2/3/4 ops "
        f"{acc[1]:.0%}/{acc[2]:.0%}/{acc[3]:.0%}/{acc[4]:.0%} | 2 ops: single {two['single_accuracy']:.0%}, "
        f"majority {two['majority_accuracy']:.0%} | boxed {stats['solver_boxed_rate']:.0%}, "
        f"<question> {stats['challenger_question_rate']:.0%} | {output}"
    )
    print(output)


class _ChatML:
    """Stands in for the tokenizer while the tokenizer itself is being trained."""

    chat_template = CHAT_TEMPLATE

    @staticmethod
    def apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **_):
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


if __name__ == "__main__":
    app()
