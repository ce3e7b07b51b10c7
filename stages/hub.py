"""The Hugging Face Hub as the artifact bus (DESIGN.md section 2), shared by the stages.

References. Every input flag takes a local folder or a Hub reference:
  hf://<ns>/<repo>[@<revision>]                     a model repo at a branch, tag or commit (default main):
                                                    an adapter (hf://<ns>/<run>-solver@iter01) or a base model
  hf://datasets/<ns>/<repo>/<config>[@<revision>]   a dataset artifact by one of its configs
                                                    (hf://datasets/<ns>/<run>-questions/iter01-train)
`resolve` downloads a reference into the HF cache and returns a folder that looks exactly like the
local artifact (its files, summary.json, DONE), and the commit it read; stages record that commit.

Layout (`model_target`, `dataset_target`). Adapters: one model repo per role, one branch per
iteration (iter01 ...) holding the adapter, summary.json, DONE and the card (README.md), pushed in
ONE commit, so a branch without DONE is incomplete. The evaluation of the Solver of iteration k lives
on that branch under evaluate/ (the base's, iteration 0, on iter00). Datasets: one repo per run, one
config per iteration and artifact (iter01-raw, iter01-labeled, iter01-train), pushed with datasets'
push_to_hub; then, LAST, one commit with the completion markers summaries/<config>.json (the
stage's summary) and the card: data without its marker is not complete.

Token: huggingface_hub's own (HF_TOKEN, else the saved login); checked once with whoami before any
work, never printed, logged or written. Repos are created private. Heavy imports stay inside.
"""

import json
import re
import shutil
import sys
import time
from pathlib import Path

import artifacts

PREFIX = "hf://"
SYNTAX = "hf://<ns>/<repo>[@<revision>] or hf://datasets/<ns>/<repo>/<config>[@<revision>]"
ATTEMPTS = 3  # tries of one push: huggingface_hub retries uploads itself, but never a commit
_token_checked = False


def parse(ref: str) -> dict | None:
    """A Hub reference as {repo_type, repo, config, revision}; None for a local path."""
    if not ref.startswith(PREFIX):
        return None
    body, _, revision = ref[len(PREFIX):].partition("@")
    parts = body.strip("/").split("/")
    dataset = parts[0] == "datasets"
    if dataset:
        parts = parts[1:]
    if len(parts) != (3 if dataset else 2) or not all(parts) or "@" in revision:
        artifacts.fail(f"{ref!r} is not a Hub reference: use {SYNTAX}.")
    return dict(repo_type="dataset" if dataset else "model", repo="/".join(parts[:2]),
                config=parts[2] if dataset else None, revision=revision or "main")


def check_token(required: bool) -> None:
    """One clear error, before any work, for a missing (when `required`) or rejected token."""
    global _token_checked
    if _token_checked:
        return
    import httpx
    from huggingface_hub import HfApi, constants, get_token

    if get_token() is None:
        if required:
            artifacts.fail("no Hub token: set HF_TOKEN or log in with `hf auth login` (needed by --hub-repo).")
        return
    try:
        HfApi().whoami()
    except (httpx.HTTPError, OSError) as e:  # a Hub error or no connection (OSError: offline mode too)
        if getattr(getattr(e, "response", None), "status_code", None) == 401:
            artifacts.fail("the Hub rejected the token (from HF_TOKEN or the saved login): set a valid one "
                           "or log in again with `hf auth login`.")
        artifacts.fail(f"cannot check the Hub token at {constants.ENDPOINT}: {reason(e)}")
    _token_checked = True


def reason(e: Exception) -> str:
    """An exception as one short line (a Hub error's first line, which has its status; never a header)."""
    first = (str(e).strip().splitlines() or [""])[0].rstrip(".")
    return first if getattr(e, "response", None) is not None else f"{type(e).__name__}: {first}"


def retrying(what: str, fn):
    """fn(), retried on a server error or a dropped connection; else one clear error line."""
    import httpx

    for attempt in range(1, ATTEMPTS + 1):
        try:
            return fn()
        except httpx.HTTPError as e:  # huggingface_hub's HfHubHTTPError is one too
            status = getattr(getattr(e, "response", None), "status_code", None)
            if attempt == ATTEMPTS or (status is not None and status < 500 and status != 429):
                artifacts.fail(f"{what} failed: {reason(e)}. It is not marked complete there; rerun the same "
                               "command to push again (the local output is kept).")
            artifacts.log(f"{what}: {reason(e)}; retrying ({attempt}/{ATTEMPTS - 1})")
            time.sleep(2 ** attempt)


# --- inputs --------------------------------------------------------------------------------------------


def resolve(ref: str, what: str) -> tuple[Path, str]:
    """A Hub reference as (local folder that looks like the artifact, commit read)."""
    import httpx
    from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    r = parse(ref)
    check_token(required=False)
    repo, kind = r["repo"], r["repo_type"]
    try:
        sha = HfApi().repo_info(repo, repo_type=kind, revision=r["revision"]).sha
        if kind == "model":  # an adapter branch or a model; an evaluation stored beside it is not needed
            return Path(snapshot_download(repo, revision=sha, ignore_patterns=["evaluate/*"])), sha
        marker = json.loads(Path(hf_hub_download(repo, f"summaries/{r['config']}.json", repo_type=kind,
                                                 revision=sha)).read_text())
        folder = Path(constants.HF_HOME) / "rzero" / repo.replace("/", "--") / sha / marker["artifact"]
        if not artifacts.is_complete(folder):
            snapshot = Path(snapshot_download(repo, repo_type=kind, revision=sha,
                                              allow_patterns=[f"{c}/*" for c in marker["files"]]))
            _assemble(snapshot, marker, folder)
        return folder, sha
    except RepositoryNotFoundError:
        artifacts.fail(f"{what} {ref}: no such repo on the Hub, or the token cannot see it (repos are private).")
    except RevisionNotFoundError:
        artifacts.fail(f"{what} {ref}: the repo has no revision {r['revision']!r} (a branch, tag or commit).")
    except LocalEntryNotFoundError as e:  # the download failed and the cache does not have it
        artifacts.fail(f"{what} {ref}: cannot download it: {reason(e)}")
    except EntryNotFoundError:
        artifacts.fail(f"{what} {ref} is incomplete on the Hub (no summaries/{r['config']}.json marker): its "
                       "push failed or never ran. Rerun the stage that makes it.")
    except (httpx.HTTPError, OSError) as e:  # a network failure: one line, no traceback
        artifacts.fail(f"{what} {ref}: {reason(e)}")


def input(ref: str, what: str, made_by: str, inputs: dict) -> Path:
    """An input artifact, local or on the Hub, as a complete local folder (or exit with an error that
    says which stage makes it); `inputs` records where it came from, with the commit, for summary.json."""
    commit = None
    if ref.startswith(PREFIX):
        path, commit = resolve(ref, what.split()[0])
        if not artifacts.is_complete(path):
            artifacts.fail(f"{what} {ref} is incomplete on the Hub (no {artifacts.DONE} on that revision): its push "
                           f"failed or never ran. Rerun {made_by}.")
    else:
        path = Path(ref)
    inputs[what.split()[0]] = dict(ref=ref, commit=commit)
    return artifacts.require_complete(path, what, made_by)


def optional_input(ref: str, what: str, made_by: str, inputs: dict) -> str | None:
    """An input flag that may be empty (an adapter of iteration k-1 at k = 1): None when empty,
    else the folder of the complete artifact, as `input` gives it."""
    return str(input(ref, what, made_by, inputs)) if ref else None


def base(ref: str, inputs: dict) -> str:
    """The base model as transformers loads it: a local folder or a Hub model id as given, or the
    download of an hf:// reference. `inputs` records it with its commit when it is on the Hub."""
    commit = None
    if ref.startswith(PREFIX):
        folder, commit = resolve(ref, "--base-model")
        inputs["--base-model"] = dict(ref=ref, commit=commit)
        return str(folder)
    if not Path(ref).exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", ref):
        commit = model_commit(ref)
    inputs["--base-model"] = dict(ref=ref, commit=commit)
    return ref


def _assemble(snapshot: Path, marker: dict, folder: Path) -> None:
    """The local form of a dataset artifact: one parquet file per config, summary.json, DONE."""
    import pyarrow.parquet as pq

    partial = artifacts.begin(folder, overwrite=True)
    for config, file in marker["files"].items():
        shards = sorted((snapshot / config).glob("*.parquet"))
        if len(shards) == 1:
            shutil.copyfile(shards[0], partial / file)
        else:  # datasets shards a big config; the stages read one file
            import pyarrow as pa

            pq.write_table(pa.concat_tables([pq.read_table(s) for s in shards]), partial / file)
    (partial / artifacts.SUMMARY).write_text(json.dumps(marker["summary"], indent=2) + "\n")
    (partial / artifacts.DONE).write_text(marker["summary"].get("finished_at", "") + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def model_commit(repo: str) -> str | None:
    """The commit of a Hub model id as transformers will load it, when the Hub is reachable."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        return HfApi().model_info(repo).sha
    except (OSError, RepositoryNotFoundError) as e:  # offline, no connection, or not visible to this token
        artifacts.log(f"--base-model {repo}: no Hub commit recorded ({reason(e)}); the id alone is")
        return None


# --- outputs -------------------------------------------------------------------------------------------


def model_target(repo: str, iteration: int, folder: str = "") -> dict | None:
    """Where an adapter (or, with folder="evaluate", an evaluation) goes: model repo `repo`, branch
    iterNN. None when `repo` is empty (local only). Checks the token first, before any work."""
    if not repo:
        return None
    _check_repo_id(repo)
    check_token(required=True)
    branch = f"iter{iteration:02d}"
    return dict(repo_type="model", repo=repo, branch=branch, folder=folder,
                ref=f"{PREFIX}{repo}@{branch}" + (f" ({folder}/)" if folder else ""))


def dataset_target(repo: str, iteration: int, files: dict[str, str]) -> dict | None:
    """Where a dataset artifact goes: dataset repo `repo`, config iterNN-<name> for each
    `files` entry {name: local parquet file}; the first config names the artifact."""
    if not repo:
        return None
    _check_repo_id(repo)
    check_token(required=True)
    configs = {f"iter{iteration:02d}-{name}": file for name, file in files.items()}
    artifact = next(iter(configs))
    return dict(repo_type="dataset", repo=repo, configs=configs, artifact=artifact,
                ref=f"{PREFIX}datasets/{repo}/{artifact}")


def _check_repo_id(repo: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo):
        artifacts.fail(f"--hub-repo {repo!r} is not a repo id: use <namespace>/<name>.")


def is_complete(target: dict) -> bool:
    """Complete on the Hub: the branch has DONE and summary.json (one commit with the files), or the
    dataset repo has the marker of every config (written after the data)."""
    from huggingface_hub import HfApi

    api = HfApi()
    if target["repo_type"] == "model":
        prefix = f"{target['folder']}/" if target["folder"] else ""
        names = [prefix + artifacts.DONE, prefix + artifacts.SUMMARY]
        return retrying(f"checking {target['ref']}", lambda: all(
            api.file_exists(target["repo"], name, revision=target["branch"]) for name in names))
    return retrying(f"checking {target['ref']}", lambda: all(
        api.file_exists(target["repo"], f"summaries/{config}.json", repo_type="dataset")
        for config in target["configs"]))


def skip(target: dict | None, output: Path, overwrite: bool, stage: str) -> bool:
    """True when there is nothing to do: the output is complete on the Hub, or it is complete here and
    only its push was missing (a rerun after a failed push: it is pushed now, the work is not redone)."""
    if target is None or overwrite:
        return False
    if is_complete(target):
        artifacts.log(f"{stage}: {target['ref']} is complete on the Hub, skipping (--overwrite to redo)")
        return True
    if artifacts.is_complete(output):
        artifacts.log(f"{stage}: {output} is complete, skipping the work; it is not on the Hub yet: pushing it")
        push(output, target)
        return True
    return False


def start(stage: str, output: Path, overwrite: bool, target: dict | None) -> Path | None:
    """The `.partial` folder a stage works in (artifacts.begin), or None when there is nothing to do:
    its output is complete here or on the Hub (then pushed, if only the push was missing)."""
    if skip(target, output, overwrite, stage):
        return None
    partial = artifacts.begin(output, overwrite)
    if partial is None:
        artifacts.log(f"{stage}: {output} is complete, skipping (--overwrite to redo)")
    return partial


def push(output: Path, target: dict | None) -> None:
    """Push a complete local artifact to its target (nothing when target is None)."""
    if target is None:
        return
    summary = artifacts.read_summary(output)
    what = f"push of {output} to {target['ref']}"
    if target["repo_type"] == "model":
        commit = retrying(what, lambda: _push_folder(output, target, summary))
    else:
        commit = retrying(what, lambda: _push_dataset(output, target, summary))
    artifacts.log(f"pushed {output} to {target['ref']} (commit {commit[:12]})")


def _push_folder(output: Path, target: dict, summary: dict) -> str:
    from huggingface_hub import CommitOperationAdd, HfApi

    api, repo, branch = HfApi(), target["repo"], target["branch"]
    prefix = f"{target['folder']}/" if target["folder"] else ""
    api.create_repo(repo, private=True, exist_ok=True)
    api.create_branch(repo, branch=branch, exist_ok=True)  # from main
    files = [p for p in sorted(output.rglob("*")) if p.is_file() and p.name != "README.md"]  # PEFT's own card
    operations = [CommitOperationAdd(prefix + p.relative_to(output).as_posix(), str(p)) for p in files]
    operations.append(CommitOperationAdd(prefix + "README.md", model_card(summary, target).encode()))
    return api.create_commit(repo, operations, revision=branch, commit_message=_title(summary)).oid


def _push_dataset(output: Path, target: dict, summary: dict) -> str:
    import pyarrow.parquet as pq
    from datasets import Dataset
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download

    api, repo, kind = HfApi(), target["repo"], "dataset"
    markers = {config: f"summaries/{config}.json" for config in target["configs"]}
    api.create_repo(repo, repo_type=kind, private=True, exist_ok=True)
    # An artifact being redone is not complete while its new data goes up: its markers go first.
    stale = [m for m in markers.values() if m in api.list_repo_files(repo, repo_type=kind)]
    if stale:
        api.create_commit(repo, [CommitOperationDelete(m) for m in stale], repo_type=kind,
                          commit_message=f"{target['artifact']}: redo")
    for config, file in target["configs"].items():
        Dataset(pq.read_table(output / file)).push_to_hub(  # (from_parquet cannot read zero rows)
            repo, config_name=config, split="train", private=True, commit_message=f"{config}: data")
    marker = dict(artifact=target["artifact"], files=target["configs"], summary=summary)
    # The card lists every artifact of the repo, so it is rebuilt from all the markers.
    present = sorted(p for p in api.list_repo_files(repo, repo_type=kind) if p.startswith("summaries/"))
    everything = {p: json.loads(Path(hf_hub_download(repo, p, repo_type=kind)).read_text())
                  for p in present if p not in markers.values()}
    everything.update({m: marker for m in markers.values()})
    readme = Path(hf_hub_download(repo, "README.md", repo_type=kind)).read_text()
    operations = [CommitOperationAdd(m, (json.dumps(marker, indent=2, default=str) + "\n").encode())
                  for m in markers.values()]
    operations.append(CommitOperationAdd("README.md", dataset_card(readme, repo, everything.values()).encode()))
    return api.create_commit(repo, operations, repo_type=kind, commit_message=_title(summary) + " (complete)").oid


# --- cards ---------------------------------------------------------------------------------------------

HIDDEN = {"stage", "iteration", "base_identity", "args", "inputs", "command", "history", "finished_at"}


def _title(summary: dict) -> str:
    return f"{summary.get('stage', 'artifact')}, iteration {summary.get('iteration')}"


def _base_repo(summary: dict) -> str | None:
    """The base model's Hub repo id, when it came from the Hub (not a local folder)."""
    ref = summary.get("inputs", {}).get("--base-model", {}).get("ref", "")
    if parse(ref):
        return parse(ref)["repo"]
    return ref if re.fullmatch(r"[\w.-]+/[\w.-]+", ref) and not Path(ref).exists() else None


def section(summary: dict, load: str) -> str:
    """What a card says about one artifact: base, iteration, parents with commits, numbers, command."""
    repo, commit = _base_repo(summary), summary.get("inputs", {}).get("--base-model", {}).get("commit")
    base_line = (f"`{repo}`" + (f" at commit `{commit}`" if commit else "") if repo
                 else f"`{summary.get('base_identity')}` (a local folder: build or fetch the same base)")
    lines = [f"- stage: `{summary.get('stage')}`, iteration {summary.get('iteration')}, "
             f"finished {summary.get('finished_at', '?')}",
             f"- base model: {base_line}", f"- load: `{load}`", "- parents:"]
    parents = {flag: i for flag, i in summary.get("inputs", {}).items() if flag != "--base-model"}
    lines += [f"  - `{flag}` `{i['ref']}`" + (f" at commit `{i['commit']}`" if i.get("commit") else " (local)")
              for flag, i in parents.items()] or ["  - none"]
    lines += ["", "| statistic | value |", "|---|---|"]
    for key, value in summary.items():
        if key in HIDDEN:
            continue
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            if v is None or isinstance(v, (int, float, str, bool)):
                lines.append(f"| {key}{'.' + str(sub) if sub is not None else ''} | "
                             f"{f'{v:.4g}' if isinstance(v, float) else v} |")
    lines += ["", "Reproduce:", "", "```bash", summary.get("command", "(not recorded)"), "```", ""]
    return "\n".join(lines)


def model_card(summary: dict, target: dict) -> str:
    from huggingface_hub import ModelCardData

    base = _base_repo(summary)
    folder = target["folder"]
    data = ModelCardData(base_model=base, library_name=None if folder else "peft",
                         tags=["r-zero", summary.get("stage", "")])
    if folder:
        load = f"hf_hub_download({target['repo']!r}, '{folder}/summary.json', revision={target['branch']!r})"
    else:
        load = (f"PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base or 'BASE'!r}), "
                f"{target['repo']!r}, revision={target['branch']!r})")
    head = f"# R-Zero {summary.get('stage', '')}: {target['repo']} @ {target['branch']}"
    return f"---\n{data.to_yaml()}\n---\n\n{head}\n\n{section(summary, load)}"


def dataset_card(readme: str, repo: str, markers) -> str:
    """The repo's README.md: datasets' front matter (the configs) kept, a section per artifact."""
    match = re.match(r"^---\n.*?\n---\n", readme, re.S)
    front = match.group(0) if match else ""
    body = [f"# R-Zero questions: {repo}", "",
            "Questions written by the Challenger (`iterNN-raw`), labeled by the Solver's majority vote "
            "(`iterNN-labeled`), and the kept band (`iterNN-train`), one config per iteration and artifact.", ""]
    for marker in sorted({m["artifact"]: m for m in markers}.values(), key=lambda m: m["artifact"]):
        configs = ", ".join(f"`{c}`" for c in marker["files"])
        body += [f"## {marker['artifact']} (configs {configs})", "",
                 section(marker["summary"], f"load_dataset({repo!r}, {next(iter(marker['files']))!r})")]
    return front + "\n" + "\n".join(body)


if __name__ == "__main__":  # python stages/hub.py REF: print the local folder of a Hub reference
    if len(sys.argv) != 2 or not parse(sys.argv[1]):
        artifacts.fail(f"usage: python stages/hub.py REF, with REF {SYNTAX}")
    print(resolve(sys.argv[1], "REF")[0])
