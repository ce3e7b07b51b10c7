"""Running the kit's stage scripts as a user does: subprocesses from the repository root, offline."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = dict(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
# Tiny settings that exercise every code path of a stage in seconds on the quick base.
TINY = dict(
    challenger=["--m", "3", "--steps", "2", "--prompts-per-step", "2", "--group-size", "4", "--micro-batch-size", "8",
                "--max-new-tokens", "40", "--solver-max-new-tokens", "40", "--lora-rank", "4", "--lora-alpha", "8"],
    questions=["--num-samples", "24", "--max-new-tokens", "40"],
    labeled=["--m", "3", "--delta", "0.5", "--max-new-tokens", "40"],
    solver=["--steps", "2", "--prompts-per-step", "2", "--group-size", "4", "--micro-batch-size", "8",
            "--max-new-tokens", "40", "--lora-rank", "4", "--lora-alpha", "8"],
    evaluate=["--tasks", "rzero_micro", "--max-new-tokens", "40"],
)


def env(**extra) -> dict:
    return {**os.environ, **OFFLINE, **extra}


def run(script: str, *args, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run stages/<script>.py with `args`; on an unexpected exit code, fail with its output."""
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / f"{script}.py"), *map(str, args)], cwd=ROOT,
                          env=env(), capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}")
    return proc


def checksum(path: Path) -> str:
    """One hash over every file under `path` (names and bytes): inputs must come out unchanged."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def reply_json(handler, payload) -> None:
    """Answer an http.server request with `payload` as JSON (the fake OpenAI-compatible servers)."""
    data = json.dumps(payload).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
