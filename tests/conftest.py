"""Test setup: stages/ on the import path, and nothing reaches the network."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))

# Before any Hugging Face library is imported: no Hub lookups, no telemetry, no xet.
for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A Hub call that slips past offline mode still stays on this machine (port 9 refuses at once), and
# `datasets` does not ping S3 to count downloads. Hub tests get a live endpoint through `hub.env`.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")

sys.path.insert(0, str(ROOT / "tests"))  # for hub_fixtures under any --import-mode
from hub_fixtures import _hub_faults_cleared, hub  # noqa: E402,F401  (the `hub` fixture)


@pytest.fixture(scope="session")
def quick_base(tmp_path_factory) -> Path:
    """A micro-world base from the --quick recipe: learns the formats in seconds, not the arithmetic."""
    from stage_helpers import run

    cache = tmp_path_factory.mktemp("quick-cache")
    return Path(run("build_base", "--quick", "--cache-dir", cache).stdout.strip().splitlines()[-1])


def pytest_configure(config):
    config.addinivalue_line("markers", "vllm: runs a real vLLM engine (CPU or GPU); in the vLLM venv: "
                            "python -m pytest -m vllm tests (requirements-vllm.txt; README: the vLLM tests)")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped, with the reason, where it is absent")


def pytest_collection_modifyitems(config, items):
    """vllm tests are skipped, visibly, where vLLM is not installed, except when they are asked for by
    name (-m vllm): then a missing vLLM is an error, never a green run of skips. gpu tests skip without CUDA."""
    import importlib.util

    has_vllm = importlib.util.find_spec("vllm") is not None
    if not has_vllm and "vllm" in (config.option.markexpr or "") and "not vllm" not in config.option.markexpr:
        raise pytest.UsageError("-m vllm asks for the vLLM tests, but vllm is not importable in this interpreter "
                                f"({sys.executable}): install requirements-vllm.txt")
    has_cuda = None
    for item in items:
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(pytest.mark.skip(reason="vLLM is not installed here; these run in the vLLM venv "
                                                    "(requirements-vllm.txt; README: the vLLM tests)"))
        if "gpu" in item.keywords:
            if has_cuda is None:
                import torch

                has_cuda = torch.cuda.is_available()
            if not has_cuda:
                item.add_marker(pytest.mark.skip(reason="needs CUDA (GRPO with vLLM colocate is GPU-only)"))
