"""build_base's own mechanics: the training precision follows the CPU, and packed rows train on
exactly what a padded batch does (no example attends to another)."""

import json
from collections import Counter
from pathlib import Path

import pytest

import build_base


def test_an_explicit_precision_is_taken_as_given():
    assert build_base.choose_precision("fp32") == ("fp32", "--dtype fp32")
    assert build_base.choose_precision("bf16") == ("bf16", "--dtype bf16")


def test_auto_never_picks_bf16_without_native_support(monkeypatch):
    import torch

    # an AVX2-only CPU: bf16 autocast there is 16x slower than fp32, so auto must say fp32 and why
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    precision, why = build_base.choose_precision("auto")
    assert precision == "fp32" and "no native bf16" in why


def test_auto_with_native_bf16_decides_by_measuring(monkeypatch):
    import torch

    # a CPU that claims native bf16: the choice comes from the probe, and the reason says so
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    precision, why = build_base.choose_precision("auto")
    assert precision in ("fp32", "bf16") and "probe" in why


def test_the_first_probe_on_a_cpu_is_kept_and_reused(monkeypatch, tmp_path):
    import torch

    # two probes on one machine gave 1.0x and 1.3x: each answer names another base, so the first one stands
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    remember = tmp_path / "cache" / "precision.json"
    first = build_base.choose_precision("auto", remember=remember)
    assert remember.is_file() and [v["precision"] for v in json.loads(remember.read_text()).values()] == [first[0]]

    def no_probe(*_args, **_kwargs):
        raise AssertionError("probed again")

    monkeypatch.setattr(torch, "randn", no_probe)
    again = build_base.choose_precision("auto", remember=remember)
    assert again[0] == first[0] and again[1].startswith(first[1]) and "kept from the first probe" in again[1]
    # another CPU probes for itself
    monkeypatch.setattr(build_base, "_cpu_model", lambda: "another CPU")
    with pytest.raises(AssertionError, match="probed again"):
        build_base.choose_precision("auto", remember=remember)


def test_builds_in_any_cache_folder_share_the_machines_verdict(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    # a verdict kept per --cache-dir let the tests' quick base (its own cache folder) and a second quick
    # build (the default one) take bf16 and fp32 on a CPU whose probe wavers: two bases of one recipe
    asked = []

    def recorded(requested, remember=None):
        asked.append(remember)
        raise SystemExit(3)

    monkeypatch.setattr(build_base, "choose_precision", recorded)
    for folder in ("one", "two"):
        result = CliRunner().invoke(build_base.app, ["--quick", "--cache-dir", str(tmp_path / folder)])
        assert result.exit_code == 3
    assert asked == [build_base.PRECISION_MEMORY] * 2 and tmp_path not in build_base.PRECISION_MEMORY.parents


def test_a_bad_dtype_is_one_clear_error():
    from stage_helpers import run

    proc = run("build_base", "--quick", "--dtype", "fp16", check=False)
    assert proc.returncode == 2 and "--dtype 'fp16': use auto, fp32 or bf16" in proc.stderr


@pytest.fixture(scope="module")
def tiny_model():
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=128)
    return Qwen3ForCausalLM(config).eval()


def examples(seed: int = 0) -> list[tuple[list[int], list[int]]]:
    import random

    rng = random.Random(seed)
    return [([rng.randrange(3, 50) for _ in range(rng.randint(2, 9))], [rng.randrange(3, 50) for _ in range(rng.randint(1, 12))])
            for _ in range(12)]


def test_packed_rows_give_the_padded_batch_loss(tiny_model):
    import torch

    batch = examples()
    packed = build_base.pack(batch, row_length=40, pad_id=0)
    assert packed["input_ids"].shape[0] < len(batch)  # several examples share a row
    assert (packed["labels"] != -100).sum() == sum(len(c) for _, c in batch)  # loss on every completion token
    length = max(len(p) + len(c) for p, c in batch)
    ids = torch.zeros((len(batch), length), dtype=torch.long)
    labels = torch.full((len(batch), length), -100)
    for i, (p, c) in enumerate(batch):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
    with torch.no_grad():
        padded_loss = tiny_model(input_ids=ids, labels=labels).loss
        packed_loss = tiny_model(**packed).loss
    # equal only if the block-causal mask keeps every example to itself
    assert packed_loss.item() == pytest.approx(padded_loss.item(), abs=1e-5)


def test_every_example_is_placed_once_and_whole():
    batch = examples(1)
    packed = build_base.pack(batch, row_length=32, pad_id=0)
    found = []
    for ids, positions in zip(packed["input_ids"].tolist(), packed["position_ids"].tolist()):
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(ids)]
        found += [tuple(ids[a:b]) for a, b in zip(starts, starts[1:])]
    assert sorted(tuple(p + c) for p, c in batch) == sorted(f for f in found if any(f))


def test_the_ladder_world_has_a_validation_split_no_training_step_sees(tmp_path):
    import random

    import microworld
    import rzero
    from stage_helpers import run

    proc = run("build_base", "--quick", "--world", "ladder", "--cache-dir", tmp_path)
    base = Path(proc.stdout.strip().splitlines()[-1])
    assert base.name.startswith("micro-quick-ladder-")
    split = {name: [json.loads(line) for line in (base / f"{name}.jsonl").read_text().splitlines()]
             for name in ("heldout", "validation")}
    assert Counter(r["num_ops"] for r in split["validation"]) == {1: 10, 2: 20, 3: 20, 4: 20}
    expressions = {name: microworld.expressions(rows) for name, rows in split.items()}
    assert not expressions["heldout"] & expressions["validation"]  # disjoint: choices never touch the held-out set
    assert all(microworld.format_number(microworld.evaluate_arithmetic(r["question"])) == r["answer"]
               for r in split["validation"])
    summary = json.loads((base / "summary.json").read_text())
    assert summary["validation_questions"] == 70 and summary["recipe"]["world"] == "ladder"
    # the training stream, regenerated from the recipe, never holds a validation question, not even as a line
    recipe = summary["recipe"]
    rng = random.Random(recipe["seed"])
    microworld.heldout_questions(rng, recipe)
    microworld.heldout_questions(rng, recipe, recipe["validation_per_ops"], expressions["heldout"])
    unseen = expressions["heldout"] | expressions["validation"]
    ops = Counter()
    for _ in range(3000):
        messages, completion = microworld.example(rng, recipe, unseen)
        question = rzero.extract_question(completion) or messages[-1]["content"]
        assert question[len("What is "):-1] not in expressions["validation"]
        assert not any(line.split(": ")[-1] in expressions["validation"] for line in completion.splitlines())
        if "<question>" not in completion:
            ops[question.count(" ") // 2 - 1, completion.startswith("Step by step")] += 1
    # the ladder: two operations are worked nearly always, three and four now and then (careful_share by rung)
    assert ops[3, True] + ops[4, True] < 0.6 * (ops[3, False] + ops[4, False])
    assert ops[2, True] > 4 * ops[2, False]
    # the README's Challenger cap for this world: CHALLENGER_MAX_NEW_TOKENS=12 closes a question of up to four
    # operations (the longest the base was trained on) and cuts any longer one, which then parses as none
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    for num_ops in range(1, 7):
        expression = " - ".join(["9"] * (num_ops + 1))
        question = microworld.question_text(expression)
        ids = tokenizer(f"<question>{question}</question>\n\\boxed{{-99}}")["input_ids"]
        assert (rzero.extract_question(tokenizer.decode(ids[:12])) == question) == (num_ops <= 4), num_ops


def test_an_unknown_world_is_one_clear_error():
    from stage_helpers import run

    proc = run("build_base", "--quick", "--world", "tiny", check=False)
    assert proc.returncode == 2 and "--world 'tiny': use default, ladder or steep" in proc.stderr


def test_the_steep_world_is_the_ladder_with_an_untrained_challenger_that_writes_easy_questions():
    import random

    import microworld

    ladder, steep = build_base.WORLDS["ladder"], build_base.WORLDS["steep"]
    changed = {k for k in ladder.keys() | steep.keys() if ladder.get(k) != steep.get(k)}
    assert changed == {"world", "challenger_ops_weights"}  # the same Solver curriculum and base, another Challenger

    def challenger_ops(recipe) -> Counter:
        rng, ops = random.Random(0), Counter()
        for _ in range(4000):
            _, completion = microworld.example(rng, recipe, set())
            if completion.startswith("<question>"):
                ops[completion.split("</question>")[0].count(" ") // 2 - 1] += 1
        return ops

    for recipe, one_op_share in ((ladder, (0.5, 0.7)), (steep, (0.9, 1.0))):
        ops = challenger_ops(recipe)
        assert one_op_share[0] < ops[1] / sum(ops.values()) < one_op_share[1], (recipe["world"], ops)
