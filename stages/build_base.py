"""Build the micro-world base model: a tiny Qwen3 that has learned synthetic integer arithmetic in
exactly the Challenger and Solver formats (DESIGN.md sections 3 and 5), imperfect on purpose.

Reads nothing and needs no network. Writes a model folder that `AutoModelForCausalLM` and
`AutoTokenizer` load with no extra arguments (ChatML chat template, pad token, left padding),
plus `heldout.jsonl` (question, answer, num_ops: questions no training step ever sees, not even
as an intermediate line of a worked solution), for --world ladder or steep `validation.jsonl` (the same, disjoint
from the held-out set: where choices are made), `summary.json` and `DONE`. The folder is named by
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
  python stages/build_base.py --world ladder                   # the ladder world, with validation.jsonl
  python stages/build_base.py --world steep                    # the ladder with an untrained Challenger that writes easy questions
"""

import hashlib
import json
import math
import os
import platform
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
    steps=850,              # optimizer steps: 4.7 min in fp32 on 2 AVX-512 cores, about 9.5 min estimated on 2 AVX2
    batch_size=48,          # examples per step (a random mix; length buckets slowed learning 3x here)
    row_length=256,         # examples are packed into rows of this many tokens (no compute on padding)
    learning_rate=2e-3,     # AdamW, linear warmup then cosine to 10% (3e-3 learned far less: 74/22/9/4 greedy)
    warmup_steps=50,
    seed=0,
)
# The ladder (issue 13): a world where what the Solver learns depends on how hard its questions are, so
# that a Challenger that moves toward harder questions can beat the untrained one. The base works two-
# operation questions step by step (greedy too: p near 1, out of the band) but three and four operations
# only now and then, so only questions that long teach it to work them; and the untrained Challenger
# rarely writes one. A validation split (disjoint from training and held-out) is where choices are made.
LADDER = dict(
    RECIPE, world="ladder",
    careful_share=(0.45, 0.9, 0.3, 0.3),      # worked solutions by number of operations: long chains now and then
    challenger_ops_weights=(6, 4, 0.4, 0.2),  # the untrained Challenger: 1-2 operations, a long chain rarely
    validation_per_ops=(20, 200, 200, 200),   # validation.jsonl, for choices: the held-out set takes 200 of the
    steps=1000,                               # 300 one-operation questions, so 20 here leave 80 to train on;
)                                             # 1,000 steps: the recipe its runs in the README were measured on
# The steep ladder: the same base, but its untrained Challenger writes one-operation questions almost only
# (which the base gets right, out of the band), so the control's band is nearly empty and the longer
# questions the Solver can learn from come only from a Challenger trained toward them.
STEEP = dict(LADDER, world="steep", challenger_ops_weights=(10, 0.5, 0.1, 0.05))
WORLDS = {"default": RECIPE, "ladder": LADDER, "steep": STEEP}
WORLD_VERSION = 4  # bump whenever the world, the solution format or the training loop changes
CHAT_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)
DEFAULT_CACHE = Path.home() / ".cache" / "rzero"
PRECISION_MEMORY = DEFAULT_CACHE / "precision.json"  # the probe's verdicts: one per machine, whatever --cache-dir

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


def choose_precision(requested: str, remember: Path | None = None) -> tuple[str, str]:
    """(precision, reason) for training on this CPU: 'fp32' or 'bf16'. bf16 autocast pays only on
    a CPU with native bf16 (AVX512-BF16 or AMX): up to 1.6x faster than fp32 there, 16x slower without
    (0.97 vs 15.6 s per step, measured on an AVX2-only EPYC). 'auto' takes bf16 only where the CPU
    has it natively and a short matmul probe shows it faster. The probe's verdict is kept in
    `remember` (a JSON file, per CPU and thread count) and reused: two probes on one machine can
    disagree (1.0x and 1.3x here), and each answer names another base, so the first one stands."""
    import torch

    if requested != "auto":
        return requested, f"--dtype {requested}"
    capability = torch.backends.cpu.get_cpu_capability()
    if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return "fp32", f"no native bf16 on this CPU ({capability})"
    machine = f"{_cpu_model()} | {capability} | {len(os.sched_getaffinity(0))} threads"
    known = json.loads(remember.read_text()) if remember and remember.is_file() else {}
    if machine in known:
        return known[machine]["precision"], f"{known[machine]['reason']}, kept from the first probe on this CPU"
    x = torch.randn(2048, 192, requires_grad=True)
    w = torch.randn(192, 768, requires_grad=True)

    def seconds(dtype) -> float:
        t0 = time.perf_counter()
        for _ in range(20):
            with torch.autocast("cpu", dtype=dtype, enabled=dtype == torch.bfloat16):
                (x @ w).float().square().mean().backward()
        return time.perf_counter() - t0

    seconds(torch.bfloat16), seconds(torch.float32)  # warm up both kernels
    bf16 = min(seconds(torch.bfloat16) for _ in range(3))
    fp32 = min(seconds(torch.float32) for _ in range(3))
    choice = "bf16" if bf16 < 0.8 * fp32 else "fp32"
    reason = f"native bf16, probe {fp32 / bf16:.1f}x fp32 speed"
    if remember:
        remember.parent.mkdir(parents=True, exist_ok=True)
        remember.write_text(json.dumps({**known, machine: dict(precision=choice, reason=reason)}, indent=1))
    return choice, reason


def _cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    world: str = typer.Option("default", help="default (recipe v4: any band question teaches the Solver to work "
                              "step by step) or ladder (long chains are rare in the base and in the untrained "
                              "Challenger's questions; has a validation split) or steep (the ladder, with an untrained "
                              "Challenger that writes one-operation questions almost only).", rich_help_panel="Method"),
    dtype: str = typer.Option("auto", help="Training precision on the CPU: auto (bf16 only where the CPU has it "
                              "natively and it measures faster), fp32 or bf16. Part of the recipe hash.",
                              rich_help_panel="Training"),
    threads: int = typer.Option(0, help="torch CPU threads (0 = every CPU this process may use).",
                                rich_help_panel="Training"),
):
    """Build (or find in the cache) the micro-world base; print its folder on stdout."""
    if dtype not in ("auto", "fp32", "bf16"):
        artifacts.fail(f"--dtype {dtype!r}: use auto, fp32 or bf16.")
    if world not in WORLDS:
        artifacts.fail(f"--world {world!r}: use {', '.join(list(WORLDS)[:-1])} or {list(WORLDS)[-1]}.")
    precision, why = choose_precision(dtype, remember=PRECISION_MEMORY)
    recipe = WORLDS[world]
    if quick:
        recipe = dict(recipe, steps=40, heldout_per_ops=20, hidden_size=64, ff_size=256, num_layers=2, num_heads=1,
                      **({"validation_per_ops": (10, 20, 20, 20)} if "validation_per_ops" in recipe else {}))
    recipe = dict(recipe, seed=seed, dtype=precision)
    name = f"micro-{'quick-' if quick else ''}{'' if world == 'default' else world + '-'}{recipe_hash(recipe)}"
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
    validation = []  # never trained on either; disjoint from the held-out set
    if recipe.get("validation_per_ops"):
        validation = microworld.heldout_questions(rng, recipe, recipe["validation_per_ops"],
                                                  exclude=microworld.expressions(heldout))
    held_expressions = microworld.expressions(heldout + validation)

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
    for split, rows in (("heldout", heldout), ("validation", validation)):
        if rows:
            with open(partial / f"{split}.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
    summary = dict(
        stage="build_base", recipe=recipe, name=name, precision=precision, precision_reason=why,
        cpu=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads(),
        parameters=sum(p.numel() for p in model.parameters()),
        train_seconds=round(train_s, 1), total_seconds=round(time.time() - t0, 1),
        final_loss=sum(losses[-50:]) / len(losses[-50:]), heldout_questions=len(heldout),
        validation_questions=len(validation), **stats,
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
