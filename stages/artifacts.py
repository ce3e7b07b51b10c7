"""The artifact contract every stage follows (DESIGN.md section 2), shared by the stages.

A stage writes into `.<name>.partial` beside its output folder, then writes `summary.json` and a
`DONE` marker, then renames the folder into place. So a folder with `DONE` is complete, a killed
stage leaves only a `.partial` folder (removed by the next run), and inputs are never touched.
This module is the leaf of stages/: local files only. Hub references (hf://...) are hub.py's,
which downloads them into folders of the same form and then checks them here.
"""

import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

DONE = "DONE"
SUMMARY = "summary.json"


def is_complete(path: str | Path) -> bool:
    path = Path(path)
    return (path / DONE).is_file() and (path / SUMMARY).is_file()


def begin(output: str | Path, overwrite: bool) -> Path | None:
    """A fresh, empty temporary folder for `output`; None when `output` is already complete and
    `overwrite` is off (the stage then skips). A leftover `.partial` from a killed run is removed."""
    output = Path(output)
    if is_complete(output) and not overwrite:
        return None
    partial = output.parent / f".{output.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def finish(partial: Path, output: str | Path, summary: dict) -> dict:
    """Write `summary.json` and `DONE` into `partial`, then move it into place as `output`
    (replacing an older complete output only at the last moment)."""
    output = Path(output)
    summary = {**summary, "command": command(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (partial / SUMMARY).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (partial / DONE).write_text(summary["finished_at"] + "\n")
    old = output.parent / f".{output.name}.old"
    if output.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(output, old)
    os.replace(partial, output)
    shutil.rmtree(old, ignore_errors=True)
    return summary


def command() -> str:
    """The command line that made an artifact, from the repository root (flags only: never a token)."""
    return shlex.join(["python", f"stages/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def read_summary(path: str | Path) -> dict:
    return json.loads((Path(path) / SUMMARY).read_text())


def require_complete(path: str | Path, what: str, made_by: str) -> Path:
    """`path` (a local folder) as a complete artifact, or exit with an error that says which stage
    makes it. Hub references are hub.input's: it downloads them, then calls this."""
    path = Path(path)
    if not path.exists():
        fail(f"{what} not found at {path}. Run {made_by} first, or pass the right path.")
    if not is_complete(path):
        fail(f"{what} at {path} is incomplete (no {DONE} marker): its stage was interrupted. "
             f"Rerun {made_by}.")
    return path


def renamed(old_value, old_flag: str, new_value, new_flag: str):
    """A flag renamed in this release: the old name still works, with a one-line notice, until the
    next release removes it. Returns the value to use."""
    if old_value in (None, ""):
        return new_value
    log(f"warning: {old_flag} is renamed {new_flag}; the old name goes away in the next release")
    return old_value


def fail(message: str) -> None:
    """Exit with a one-line error for the user (no traceback): bad input is not a crash."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def log(message: str) -> None:
    """One line on stderr, from the main process only when a stage runs under `accelerate launch`."""
    if rank() == 0:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rank() -> int:
    """This process's rank under `accelerate launch` or torchrun (RANK), 0 when it runs alone."""
    return int(os.environ.get("RANK", "0"))


def processes() -> int:
    """How many processes run this stage together (WORLD_SIZE under `accelerate launch`), else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def base_identity(base: str) -> str:
    """What identifies a base model across stages: a micro-world build's recipe name, a local
    folder's name plus a hash of its config.json, or a Hub model id (also for its download)."""
    import hashlib

    path = Path(base)
    if is_complete(path) and "name" in read_summary(path):
        return read_summary(path)["name"]
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name[len("models--"):].replace("--", "/", 1)  # HF cache: models--<ns>--<name>
    if (path / "config.json").is_file():
        return f"{path.name}:{hashlib.sha256((path / 'config.json').read_bytes()).hexdigest()[:12]}"
    return base


def check_lineage(base: str, iteration: int, inputs: dict[str, tuple[str | None, int]]) -> None:
    """Every input artifact must come from this base and from the iteration it should: `inputs`
    maps a flag name to (path or None, the iteration that artifact must have)."""
    identity = base_identity(base)
    for flag, (path, expected) in inputs.items():
        if not path:
            continue
        summary = read_summary(path)
        if summary.get("base_identity") not in (None, identity):
            fail(f"{flag} {path} was made from base {summary['base_identity']!r}, not {identity!r} "
                 f"(--base-model {base}). Use the base it was trained on, or retrain it.")
        if summary.get("iteration") is not None and summary["iteration"] != expected:
            fail(f"{flag} {path} belongs to iteration {summary['iteration']}, but --iteration {iteration} "
                 f"needs iteration {expected} there. Check --iteration and the input paths.")
