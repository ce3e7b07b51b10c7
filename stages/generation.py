"""Loading a base model with an optional LoRA adapter, and sampling from it, shared by the stages
that generate (generate_questions, label_questions, and the Solver inside train_challenger).

`make_sampler(...)` returns one function, `sample(prompts, n) -> [[text] * n per prompt]`, behind
which sit three backends: transformers `generate` (CPU or GPU, always available), vLLM in-process
with the adapter as a LoRARequest (GPU box, when vllm is installed), and an OpenAI-compatible
server such as `vllm serve --enable-lora` (the driver starts it). Heavy imports stay inside.
"""

import json
from dataclasses import dataclass
from pathlib import Path


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


def load_model(base: str, adapter: str | None = None, trainable: bool = False, dtype: str = "auto"):
    """The base model, with `adapter` (a PEFT LoRA folder) applied when given."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"auto": "auto", "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    if not torch.cuda.is_available() and dtype == "auto":
        torch_dtype = torch.float32  # CPU: bf16 matmuls are slower than fp32 for generation here
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model


def adapter_base(adapter: str) -> str | None:
    """The base a LoRA adapter was trained on, as recorded in its adapter_config.json."""
    config = Path(adapter) / "adapter_config.json"
    return json.loads(config.read_text()).get("base_model_name_or_path") if config.is_file() else None


def make_sampler(base: str, adapter: str | None, sampling: Sampling, backend: str = "auto",
                 server_url: str | None = None, batch_size: int = 64, seed: int = 0):
    """`sample(prompts, n)`: n completions (text, special tokens removed) for each prompt.
    backend: 'hf' (transformers), 'vllm' (in-process), 'server' (OpenAI-compatible completions
    API at server_url, the adapter served under the model name 'adapter'), 'auto' = vllm when it
    is importable and a GPU is present, else hf."""
    if backend == "auto":
        backend = "vllm" if _vllm_usable() else "hf"
    if backend == "hf":
        return _hf_sampler(base, adapter, sampling, batch_size, seed)
    if backend == "vllm":
        return _vllm_sampler(base, adapter, sampling, seed)
    if backend == "server":
        if not server_url:
            raise ValueError("backend 'server' needs a server URL (e.g. http://127.0.0.1:8000/v1)")
        return _server_sampler(server_url, "adapter" if adapter else base, sampling, seed)
    raise ValueError(f"unknown backend {backend!r}: use auto, hf, vllm or server")


def _vllm_usable() -> bool:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _hf_sampler(base, adapter, sampling, batch_size, seed):
    import torch

    tokenizer = load_tokenizer(base)
    model = load_model(base, adapter).eval()
    if adapter:
        model = model.merge_and_unload()  # same outputs, faster generation
    generator = torch.Generator().manual_seed(seed)
    greedy = sampling.temperature == 0

    def sample(prompts: list[str], n: int) -> list[list[str]]:
        out = []
        for i in range(0, len(prompts), max(1, batch_size // n)):
            enc = tokenizer(prompts[i : i + max(1, batch_size // n)], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)
            kwargs = dict(do_sample=False) if greedy else dict(
                do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=sampling.max_new_tokens, num_return_sequences=n,
                                     pad_token_id=tokenizer.pad_token_id, **kwargs)
            texts = tokenizer.batch_decode(ids[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
            out += [texts[k * n : (k + 1) * n] for k in range(len(texts) // n)]
        return out

    return sample


def _vllm_sampler(base, adapter, sampling, seed):
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    llm = LLM(model=base, enable_lora=bool(adapter), max_lora_rank=64, seed=seed)
    lora = LoRARequest("adapter", 1, adapter) if adapter else None

    def sample(prompts: list[str], n: int) -> list[list[str]]:
        params = SamplingParams(n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                                top_k=sampling.top_k or -1, max_tokens=sampling.max_new_tokens, seed=seed)
        results = llm.generate(prompts, params, lora_request=lora)
        return [[c.text for c in r.outputs] for r in results]

    return sample


def _server_sampler(url, model_name, sampling, seed):
    import urllib.request

    def sample(prompts: list[str], n: int) -> list[list[str]]:
        body = dict(model=model_name, prompt=prompts, n=n, temperature=sampling.temperature,
                    top_p=sampling.top_p, max_tokens=sampling.max_new_tokens, seed=seed)
        if sampling.top_k:
            body["top_k"] = sampling.top_k  # vLLM's extension of the OpenAI API
        request = urllib.request.Request(url.rstrip("/") + "/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=3600) as response:
            choices = json.loads(response.read())["choices"]
        out = [[] for _ in prompts]
        for choice in sorted(choices, key=lambda c: c["index"]):
            out[choice["index"] // n].append(choice["text"])
        return out

    return sample
