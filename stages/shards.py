"""Data-parallel shards of the generation stages (generate_questions, label_questions): one process
per GPU, each with its own engine, over contiguous slices of the work, merged in order.

vLLM's own --data-parallel-size refuses dense models since 0.14, so a stage run with
`--data-parallel n` runs n copies of itself with `--shard i/n`, copy i on GPU i of the visible ones
(CUDA_VISIBLE_DEVICES; on a CPU the copies share the cores). Each copy writes a complete artifact of
its own (artifacts.py's contract: its rows, summary.json, DONE) under `.<output>.shards/<i>-of-<n>`
beside the output, and its log beside that. On a rerun a shard that is complete with the same
flags is kept; a killed one left only its `.partial` and is redone. The parent then merges the shards
in index order and writes the output exactly as one process would; the shards go once it is complete.

Rows. The work is cut in whole sampler batches. With the transformers backend a shard starts the
sampler's seed sequence at its first batch (generation.make_sampler's first_call), so n shards give
the rows of one process. A vLLM engine or a server draws from one generator for everything it is
sent: shard i seeds its engine with seed * n + i (so shards never repeat each other's samples), and
the rows differ from one process's while their counts and schema are the same.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import artifacts

LOG_TAIL = 20  # lines of a failed shard's log shown in the error


def parse(spec: str) -> tuple[int, int] | None:
    """`--shard i/n` as (i, n) with 0 <= i < n; None for ''."""
    if not spec:
        return None
    index, _, count = spec.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        artifacts.fail(f"--shard {spec!r}: use i/n with 0 <= i < n (shard 0/2 is the first of two).")
    return int(index), int(count)


def work(total: int, batch: int, shard: tuple[int, int] | None) -> tuple[int, int, int]:
    """(start, stop, first batch) of the items shard (i, n) takes out of `total`, cut in whole
    batches of `batch` items, shards differing by at most one batch; all of it for no shard."""
    if shard is None:
        return 0, total, 0
    i, n = shard
    batches = -(-total // batch)
    first, last = i * batches // n, (i + 1) * batches // n
    return min(total, first * batch), min(total, last * batch), first


def seed(seed: int, shard: tuple[int, int] | None, backend: str) -> int:
    """The engine seed of a shard: the run's seed with the transformers backend (whose shards skip
    ahead in one seed sequence instead), seed * n + i for a vLLM engine or a server."""
    if shard is None or backend == "hf":
        return seed
    return seed * shard[1] + shard[0]


def folder(output: Path, i: int, n: int) -> Path:
    return shards_dir(output) / f"{i}-of-{n}"


def shards_dir(output: Path) -> Path:
    return Path(output).parent / f".{Path(output).name}.shards"


def flags(args: dict, skip: tuple[str, ...] = ()) -> list[str]:
    """The command-line flags of a stage's arguments as given (Typer's kebab-case, a list as the flag
    repeated), without `skip` and the ones that do not change a shard's rows: where it goes,
    overwriting, the Hub, the shard layout itself."""
    out = []
    for name, value in args.items():
        if name in ("output", "overwrite", "hub_repo", "data_parallel", "shard", *skip) or value is None:
            continue
        for one in value if isinstance(value, list) else [value]:
            out += [f"--{name.replace('_', '-')}", str(one)]
    return out


def begin(output: Path, shard: tuple[int, int], shard_flags: list[str]) -> Path | None:
    """The `.partial` folder of a shard, or None when that shard is complete with the same flags."""
    path = folder(output, *shard)
    return None if kept(path, shard_flags) else artifacts.begin(path, overwrite=True)


def kept(path: Path, shard_flags: list[str]) -> bool:
    return artifacts.is_complete(path) and artifacts.read_summary(path).get("flags") == shard_flags


def run(script: str, output: Path, n: int, shard_flags: list[str], overwrite: bool) -> list[Path]:
    """Run the shards of `output` that are not complete with `shard_flags`, all at once, one per
    GPU; wait for all of them; return the n shard folders in order. A failed shard fails the stage
    with the end of its log, after the others finish (they are kept for the rerun)."""
    from tqdm import tqdm

    if overwrite:
        shutil.rmtree(shards_dir(output), ignore_errors=True)
    shards_dir(output).mkdir(parents=True, exist_ok=True)
    gpus = visible_gpus()
    if gpus and len(gpus) < n:
        artifacts.fail(f"--data-parallel {n} runs one shard per GPU, and {len(gpus)} are visible "
                       f"(CUDA_VISIBLE_DEVICES={','.join(gpus)}): lower --data-parallel or show more GPUs.")
    threads = max(1, len(os.sched_getaffinity(0)) // n)
    todo = [i for i in range(n) if not kept(folder(output, i, n), shard_flags)]
    if len(todo) < n:
        artifacts.log(f"{script}: {n - len(todo)} of {n} shards are complete with these flags and kept")
    running = {}
    try:
        for i in todo:
            place = dict(CUDA_VISIBLE_DEVICES=gpus[i]) if gpus else dict(OMP_NUM_THREADS=str(threads))
            log = shards_dir(output) / f"{i}-of-{n}.log"
            where = f"GPU {gpus[i]}" if gpus else f"the CPU (OMP_NUM_THREADS={threads})"
            artifacts.log(f"{script}: shard {i}/{n} on {where}, log {log}")
            with open(log, "w") as f:
                running[i] = subprocess.Popen(
                    [sys.executable, str(Path(__file__).parent / f"{script}.py"), *shard_flags,
                     "--output", str(output), "--shard", f"{i}/{n}"],
                    env={**os.environ, **place}, stdout=f, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        with tqdm(total=len(todo), desc="shards", unit="shard") as bar:
            while any(p.poll() is None for p in running.values()):
                time.sleep(1)
                bar.update(sum(p.poll() is not None for p in running.values()) - bar.n)
            bar.update(len(todo) - bar.n)
    finally:
        for p in running.values():  # an interrupted parent takes its shards with it
            if p.poll() is None:
                p.kill()
    failed = [i for i, p in running.items() if p.returncode != 0]
    if failed:
        i = failed[0]
        tail = (shards_dir(output) / f"{i}-of-{n}.log").read_text().splitlines()[-LOG_TAIL:]
        artifacts.fail(f"shard {i}/{n} exited {running[i].returncode} (failed: {', '.join(map(str, failed))}); "
                       f"the end of its log:\n  " + "\n  ".join(tail) +
                       "\nFix the cause and rerun the same command: the complete shards are kept.")
    return [folder(output, i, n) for i in range(n)]


def clear(output: Path) -> None:
    """Remove the shards once the merged output is complete (it holds all their rows)."""
    shutil.rmtree(shards_dir(output), ignore_errors=True)


def visible_gpus() -> list[str]:
    """The GPUs a shard can be placed on, as CUDA_VISIBLE_DEVICES names them; [] on a CPU box."""
    import torch

    if not torch.cuda.is_available():
        return []
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [g.strip() for g in named.split(",")] if named else [str(i) for i in range(torch.cuda.device_count())]


def _die_with_parent() -> None:
    """In a shard process (Linux): killed when the stage that started it dies, so no orphan keeps
    writing a shard that a rerun starts again."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
