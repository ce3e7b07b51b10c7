"""Build the micro-world base model: a tiny Qwen3 that has learned synthetic integer arithmetic in
exactly the Challenger and Solver formats (DESIGN.md sections 3 and 5), imperfect on purpose.

Reads nothing and needs no network. Writes a model folder that `AutoModelForCausalLM` and
`AutoTokenizer` load with no extra arguments (ChatML chat template, pad token, left padding),
plus `heldout.jsonl` (question, answer, num_ops: questions no training step ever sees, not even
as an intermediate line of a worked solution), `summary.json` and `DONE`. The folder is named by
a hash of the recipe, so a second build of the same recipe is a cache hit.

The world (stages/microworld.py): questions like `What is 7 + 3 * 4 - 5?` with 1-4 operations on
operands 0-9, usual precedence, every partial result within |v| <= 99. 45% of the Solver examples
are worked one operation per line on a sampled path (`3 * 4 = 12: 7 + 12 - 5`, `7 - 5 = 2: 2 + 12`,
`2 + 12 = 14`), the rest state the answer at once. Greedy decoding follows the more frequent,
quick style; samples at T = 1.0 mix both, and the worked ones agree, so the majority of m samples
beats the greedy answer: the regime the R-Zero loop needs.

Training: a fresh Qwen3 of 1.76M parameters, AdamW, loss on completions only, examples packed into
rows with a block-causal mask; fp32, or bf16 autocast where the CPU has native bf16 and it
measures faster (--dtype auto; without native bf16 it is 16x slower).

The base is checked on the held-out set (greedy accuracy by number of operations; at T = 1.0:
single-sample and majority-of-m accuracy, label accuracy by vote share, and format rates); the
figures go in summary.json and in the closing line.

Examples:
  python stages/build_base.py                                  # full recipe, cached; prints its folder
  python stages/build_base.py --quick --cache-dir /tmp/rzero   # seconds: formats only, for plumbing tests
  python stages/build_base.py --dtype fp32                     # force fp32 (to time the path most CPUs take)
"""

import hashlib
import json
import math
import random
import time
from pathlib import Path

import typer

import artifacts
import microworld
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
    steps=1000,             # optimizer steps: with row packing, about 10 min in fp32 on 2 AVX2 cores
    batch_size=48,          # examples per step (a random mix; length buckets slowed learning 3x here)
    row_length=256,         # examples are packed into rows of this many tokens (no compute on padding)
    learning_rate=2e-3,     # AdamW, linear warmup then cosine to 10% (3e-3 learned far less: 74/22/9/4 greedy)
    warmup_steps=50,
    seed=0,
)
WORLD_VERSION = 4  # bump whenever the world, the solution format or the training loop changes
QUICK = dict(RECIPE, steps=40, heldout_per_ops=20, hidden_size=64, ff_size=256, num_layers=2, num_heads=1)
CHAT_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)
DEFAULT_CACHE = Path.home() / ".cache" / "rzero"

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


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


# --- Stage -----------------------------------------------------------------------------------------


def choose_precision(requested: str) -> tuple[str, str]:
    """(precision, reason) for training on this CPU: 'fp32' or 'bf16'. bf16 autocast pays only on
    a CPU with native bf16 (AVX512-BF16 or AMX): 1.6x faster than fp32 there, 16x slower without
    (0.97 vs 15.6 s per step, measured on an AVX2-only EPYC). 'auto' takes bf16 only where the CPU
    has it natively and a short matmul probe shows it faster."""
    import torch

    if requested != "auto":
        return requested, f"--dtype {requested}"
    if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return "fp32", f"no native bf16 on this CPU ({torch.backends.cpu.get_cpu_capability()})"
    x = torch.randn(2048, 192, requires_grad=True)
    w = torch.randn(192, 768, requires_grad=True)

    def seconds(dtype) -> float:
        t0 = time.perf_counter()
        for _ in range(20):
            with torch.autocast("cpu", dtype=dtype, enabled=dtype == torch.bfloat16):
                (x @ w).float().square().mean().backward()
        return time.perf_counter() - t0

    seconds(torch.bfloat16), seconds(torch.float32)  # warm up both kernels
    bf16, fp32 = seconds(torch.bfloat16), seconds(torch.float32)
    choice = "bf16" if bf16 < 0.8 * fp32 else "fp32"
    return choice, f"native bf16, probe {fp32 / bf16:.1f}x fp32 speed"


def pack(examples: list[tuple[list[int], list[int]]], row_length: int, pad_id: int) -> dict:
    """One training batch as packed rows: (prompt ids, completion ids) examples placed first-fit,
    longest first, into rows of `row_length` tokens; position ids restart at each example, which
    makes transformers build a block-causal mask (no example sees another), so the loss equals
    the padded batch's while padding no longer costs compute (about 40% of a padded batch here)."""
    import torch

    rows: list[list] = []  # [used length, examples]
    for prompt, completion in sorted(examples, key=lambda e: -len(e[0]) - len(e[1])):
        n = len(prompt) + len(completion)
        row = next((r for r in rows if r[0] + n <= row_length), None)
        if row is None:
            row = [0, []]
            rows.append(row)
        row[0] += n
        row[1].append((prompt, completion))
    ids = torch.full((len(rows), row_length), pad_id)
    labels = torch.full((len(rows), row_length), -100)  # loss on completions only
    positions = torch.zeros((len(rows), row_length), dtype=torch.long)
    for i, (_, items) in enumerate(rows):
        at = 0
        for prompt, completion in items:
            n = len(prompt) + len(completion)
            ids[i, at : at + n] = torch.tensor(prompt + completion)
            labels[i, at + len(prompt) : at + n] = torch.tensor(completion)
            positions[i, at : at + n] = torch.arange(n)
            at += n
        positions[i, at:] = torch.arange(row_length - at)  # the padding tail: a sequence of its own
    return dict(input_ids=ids, labels=labels, position_ids=positions, use_cache=False)


@app.command()
def main(
    cache_dir: Path = typer.Option(DEFAULT_CACHE, help="Folder that holds built bases, one subfolder per recipe hash.",
                                   rich_help_panel="Outputs"),
    output: Path = typer.Option(None, help="Write here instead of <cache-dir>/micro-<hash> (no caching by hash).",
                                rich_help_panel="Outputs"),
    overwrite: bool = typer.Option(False, help="Rebuild even if a complete build exists.", rich_help_panel="Outputs"),
    quick: bool = typer.Option(False, help="Tiny recipe that builds in seconds: learns the formats, not the arithmetic "
                               "(plumbing tests).", rich_help_panel="Method"),
    seed: int = typer.Option(0, help="Seed of the world, the data order and the initialization.",
                             rich_help_panel="Method"),
    dtype: str = typer.Option("auto", help="Training precision on the CPU: auto (bf16 only where the CPU has it "
                              "natively and it measures faster), fp32 or bf16. Part of the recipe hash.",
                              rich_help_panel="Training"),
    threads: int = typer.Option(0, help="torch CPU threads (0 = every CPU this process may use).",
                                rich_help_panel="Training"),
):
    """Build (or find in the cache) the micro-world base; print its folder on stdout."""
    if dtype not in ("auto", "fp32", "bf16"):
        artifacts.fail(f"--dtype {dtype!r}: use auto, fp32 or bf16.")
    precision, why = choose_precision(dtype)
    recipe = dict(QUICK if quick else RECIPE, seed=seed, dtype=precision)
    name = f"micro-{'quick-' if quick else ''}{recipe_hash(recipe)}"
    output = output or cache_dir / name
    artifacts.log(f"build_base: recipe {name} ({precision}: {why}) -> {output}")
    partial = artifacts.begin(output, overwrite)
    if partial is None:
        artifacts.log(f"build_base: {output} is complete, skipping (--overwrite to rebuild)")
        print(output)
        return

    import os

    import torch
    from tqdm import tqdm
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    torch.manual_seed(recipe["seed"])
    rng = random.Random(recipe["seed"])
    t0 = time.time()
    heldout = microworld.heldout_questions(rng, recipe)
    held_expressions = {r["question"][len("What is ") : -1] for r in heldout}

    corpus = [microworld.example(rng, recipe, held_expressions) for _ in range(4000)]
    tokenizer = build_tokenizer([CHAT_TEMPLATE] + [rzero.render_prompt(_ChatML, m) + c for m, c in corpus],
                                recipe["vocab_size"])
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=recipe["hidden_size"], intermediate_size=recipe["ff_size"],
        num_hidden_layers=recipe["num_layers"], num_attention_heads=recipe["num_heads"], num_key_value_heads=1,
        head_dim=recipe["head_dim"], max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen3ForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["learning_rate"], weight_decay=0.01, betas=(0.9, 0.95))
    prompt_ids: dict[str, list[int]] = {}  # a handful of distinct prompts: tokenized once
    losses = []
    model.train()
    for step in tqdm(range(recipe["steps"]), desc="build_base", unit="step", mininterval=5):
        warmup = min(1.0, (step + 1) / recipe["warmup_steps"])
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / recipe["steps"]))
        for group in optimizer.param_groups:
            group["lr"] = recipe["learning_rate"] * warmup * cosine
        batch = [microworld.example(rng, recipe, held_expressions) for _ in range(recipe["batch_size"])]
        prompts = [rzero.render_prompt(tokenizer, m) for m, _ in batch]
        completions = tokenizer([c + "<|im_end|>" for _, c in batch], add_special_tokens=False).input_ids
        for p in set(prompts) - prompt_ids.keys():
            prompt_ids[p] = tokenizer(p, add_special_tokens=False).input_ids
        inputs = pack([(prompt_ids[p], c) for p, c in zip(prompts, completions)], recipe["row_length"],
                      tokenizer.pad_token_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    train_s = time.time() - t0

    model.eval()
    stats = microworld.measure(model, tokenizer, heldout, m=0 if quick else 10, seed=recipe["seed"],
                               challenger_samples=20 if quick else 200)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    with open(partial / "heldout.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in heldout)
    summary = dict(
        stage="build_base", recipe=recipe, name=name, precision=precision, precision_reason=why,
        cpu=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads(),
        parameters=sum(p.numel() for p in model.parameters()),
        train_seconds=round(train_s, 1), total_seconds=round(time.time() - t0, 1),
        final_loss=sum(losses[-50:]) / len(losses[-50:]), heldout_questions=len(heldout), **stats,
    )
    artifacts.finish(partial, output, summary)
    acc = stats["greedy_accuracy"]
    two = stats["sampled"].get(2, dict(single_accuracy=math.nan, majority_accuracy=math.nan))
    artifacts.log(
        f"build_base: done in {summary['total_seconds']:.0f} s ({precision}: {why}) | greedy 1/2/3/4 ops "
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
        turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return turns + "<|im_start|>assistant\n"


if __name__ == "__main__":
    app()
