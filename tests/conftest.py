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
