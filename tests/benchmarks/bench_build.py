"""Seconds per training step of the micro-world base, on this CPU, in one run: padded batches (the
old loop) against packed rows (build_base.pack), in fp32 and, where the CPU has native bf16, under
bf16 autocast; plus the precision `--dtype auto` picks here and why. The recipe's model and batch.

    python tests/benchmarks/bench_build.py [--steps 10]

Each figure is the mean of --steps steps after 3 warm-up steps; the ratios are against the padded
fp32 step measured in the same run.
"""

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "stages"))

import build_base  # noqa: E402
import microworld  # noqa: E402
import rzero  # noqa: E402


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    recipe = build_base.RECIPE
    rng = random.Random(0)
    held = microworld.expressions(microworld.heldout_questions(rng, recipe))
    corpus = [microworld.example(rng, recipe, held) for _ in range(4000)]
    tokenizer = build_base.build_tokenizer(
        [build_base.CHAT_TEMPLATE] + [rzero.render_prompt(build_base._ChatML, m) + c for m, c in corpus],
        recipe["vocab_size"])

    def batch():
        examples = [microworld.example(rng, recipe, held) for _ in range(recipe["batch_size"])]
        prompts = [tokenizer(rzero.render_prompt(tokenizer, m), add_special_tokens=False).input_ids for m, _ in examples]
        completions = tokenizer([c + "<|im_end|>" for _, c in examples], add_special_tokens=False).input_ids
        return list(zip(prompts, completions))

    def padded(examples):
        length = max(len(p) + len(c) for p, c in examples)
        ids = torch.full((len(examples), length), tokenizer.pad_token_id)
        labels = torch.full((len(examples), length), -100)
        for i, (p, c) in enumerate(examples):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
        return dict(input_ids=ids, labels=labels)

    def seconds_per_step(layout: str, precision: str) -> float:
        torch.manual_seed(0)
        config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=recipe["hidden_size"],
                             intermediate_size=recipe["ff_size"], num_hidden_layers=recipe["num_layers"],
                             num_attention_heads=recipe["num_heads"], num_key_value_heads=1,
                             head_dim=recipe["head_dim"], max_position_embeddings=512, tie_word_embeddings=True)
        model = Qwen3ForCausalLM(config).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["learning_rate"])
        total = 0.0
        for step in range(3 + args.steps):
            examples = batch()
            inputs = padded(examples) if layout == "padded" else build_base.pack(
                examples, recipe["row_length"], tokenizer.pad_token_id)
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(**inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            total += (time.perf_counter() - started) if step >= 3 else 0.0
        return total / args.steps

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    print(f"CPU: {cpu_name()} ({torch.backends.cpu.get_cpu_capability()}, native bf16: {native}), "
          f"{torch.get_num_threads()} threads; batch {recipe['batch_size']} examples, rows of {recipe['row_length']}")
    print("--dtype auto picks: %s (%s)" % build_base.choose_precision("auto"))
    reference = seconds_per_step("padded", "fp32")
    print(f"padded fp32: {reference:.3f} s/step (reference)")
    packed = seconds_per_step("packed", "fp32")
    print(f"packed fp32: {packed:.3f} s/step ({reference / packed:.2f}x); {recipe['steps']} steps "
          f"= {recipe['steps'] * packed / 60:.1f} min of training")
    if native:
        for layout in ("padded", "packed"):
            s = seconds_per_step(layout, "bf16")
            print(f"{layout} bf16: {s:.3f} s/step ({reference / s:.2f}x)")
    else:
        print("bf16: not timed (no native bf16: 16x slower than fp32 on an AVX2 EPYC, measured once)")


if __name__ == "__main__":
    main()
