"""Label-stage throughput, transformers vs vLLM, on the same questions in one run.

    python tests/benchmarks/bench_label.py                       # micro-world base, CPU; needs the vLLM venv for vllm
    python tests/benchmarks/bench_label.py --base-model Qwen/Qwen3-4B-Base --max-new-tokens 4096   # a GPU box

The Solver answers each question m times at temperature 1.0, top_p 1.0, top_k 40, as
stages/label_questions.py asks it: hf in the stage's chunks (batch_size // m questions per
generate call), vllm in one call. Reported per backend: load time (model, or engine start), then
answers/s and tokens/s of the answering alone (tokens: the answer's tokens by the base's
tokenizer, stop token excluded). Questions: the micro-world base's held-out set, or with another
base, micro-world questions of the same kind (the prompt is the Solver prompt either way).
"""

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "stages"), str(ROOT / "tests")]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def questions_for(base: str, count: int) -> list[str]:
    heldout = Path(base) / "heldout.jsonl"
    if heldout.is_file():
        rows = [json.loads(line)["question"] for line in heldout.read_text().splitlines()]
    else:
        rng = random.Random(0)
        terms = lambda: " ".join(f"{rng.randint(0, 9)} {rng.choice('+-*')}" for _ in range(rng.randint(1, 4)))
        rows = [f"What is {terms()} {rng.randint(0, 9)}?" for _ in range(count)]
    return (rows * (count // len(rows) + 1))[:count]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default="", help="base model (default: the micro-world base, built or found)")
    parser.add_argument("--questions", type=int, default=200, help="distinct questions to label")
    parser.add_argument("--m", type=int, default=10, help="answers per question")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="max tokens per answer")
    parser.add_argument("--batch-size", type=int, default=256, help="hf: sequences per generate call (the stage's default)")
    parser.add_argument("--backends", default="hf,vllm", help="comma-separated: hf, vllm")
    args = parser.parse_args()

    import torch

    import generation
    import rzero
    from stage_helpers import run

    base = args.base_model or run("build_base").stdout.strip().splitlines()[-1]
    tokenizer = generation.load_tokenizer(base)
    prompts = [rzero.render_prompt(tokenizer, rzero.solver_messages(q)) for q in questions_for(base, args.questions)]
    sampling = generation.Sampling(temperature=1.0, top_p=1.0, top_k=40, max_new_tokens=args.max_new_tokens)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{cpu_name()}, {torch.get_num_threads()} threads"
    print(f"label throughput | {device} | {Path(base).name} | {len(prompts)} questions x m = {args.m}, "
          f"max {args.max_new_tokens} new tokens")
    print("| backend | load s | answer s | answers/s | tokens/s | mean tokens/answer | boxed share |")
    print("|---|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        t0 = time.time()
        sample = generation.make_sampler(base, None, sampling, backend=backend, batch_size=args.batch_size, seed=0)
        loaded = time.time() - t0
        chunk = max(1, args.batch_size // args.m) if backend == "hf" else len(prompts)  # as label_questions
        t0 = time.time()
        answers = [a for i in range(0, len(prompts), chunk) for texts in sample(prompts[i : i + chunk], args.m) for a in texts]
        seconds = time.time() - t0
        tokens = sum(len(ids) for ids in tokenizer(answers, add_special_tokens=False).input_ids)
        boxed = sum(rzero.last_boxed(a) is not None for a in answers) / len(answers)
        print(f"| {backend} | {loaded:.1f} | {seconds:.1f} | {len(answers) / seconds:,.0f} | {tokens / seconds:,.0f} | "
              f"{tokens / len(answers):.1f} | {boxed:.0%} |", flush=True)
        del sample


if __name__ == "__main__":
    main()
