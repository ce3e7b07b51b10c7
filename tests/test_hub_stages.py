"""The Hub as the artifact bus, end to end through the real clients against tests/hub_server.py: a
driver iteration with Hub output on; a fresh machine (empty runs/ and HF cache, HUB_ONLY=1) that
resumes from the Hub alone; single stages rerun from Hub references only; commits that fail or lose
their connection; and the token kept out of every file and log. Every client is a subprocess with
hub.env; the pytest process stays offline."""

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from hub import _base_repo, dataset_card, parse
from stage_helpers import ROOT, TINY

RUN = "bus"
# One iteration in about a minute on the quick base; each knob is the driver's own.
KNOBS = dict(ITERATIONS="1", RUN=RUN, N="16", M="3", DELTA="0.5", CHALLENGER_STEPS="1", CHALLENGER_PROMPTS_PER_STEP="2",
             SOLVER_STEPS="1", SOLVER_PROMPTS_PER_STEP="2", MICRO_BATCH_SIZE="2", MAX_NEW_TOKENS="32", LORA_RANK="4",
             EVAL_TASKS="rzero_micro", EVAL_MAX_NEW_TOKENS="32")
SKIPPED = "is complete on the Hub, skipping"


@pytest.fixture(scope="module")
def logs() -> list[str]:
    """stdout and stderr of every client this module runs, for the token check at the end."""
    return []


def run(hub, logs, args, env=None, check=True):
    proc = hub.run([str(a) for a in args], env={"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", **(env or {})},
                   timeout=900)
    logs.append(proc.stdout + proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))[:300]} exited {proc.returncode}\n{proc.stderr[-6000:]}")
    return proc


def stage(hub, logs, script, *args, env=None, check=True):
    return run(hub, logs, [sys.executable, ROOT / "stages" / f"{script}.py", *args], env=env, check=check)


def client(hub, logs, code, *args, env=None):
    """A client script (hub.env) that prints one JSON line last."""
    proc = run(hub, logs, [sys.executable, "-c", textwrap.dedent(code), *args], env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fresh_machine(tmp: Path) -> dict:
    """An empty HF home: nothing cached, no saved login (the token still comes from HF_TOKEN)."""
    return dict(HF_HOME=str(tmp), HF_HUB_CACHE=str(tmp / "hub"), HF_DATASETS_CACHE=str(tmp / "datasets"))


def driver(hub, logs, base, runs, **extra):
    env = dict(BASE_MODEL=str(base), RUNS_DIR=str(runs), PYTHON=sys.executable, HUB_NAMESPACE=hub.user, **KNOBS, **extra)
    return run(hub, logs, ["bash", ROOT / "run_iteration.sh"], env=env)


@pytest.fixture(scope="module")
def first(hub, quick_base, logs, tmp_path_factory) -> dict:
    """One driver iteration with the Hub on, questions and labels in two shards that read their inputs
    from the Hub themselves, and a gold probe; its local artifacts stay for comparison."""
    runs = tmp_path_factory.mktemp("machine1") / "runs"
    proc = driver(hub, logs, quick_base, runs, DATA_PARALLEL="2",
                  PROBE=f"{ROOT}/tests/fixtures/benchmarks/openai/gsm8k:main:train")
    return dict(runs=runs, it=runs / RUN / "iter01", out=proc.stderr, base=quick_base)


@pytest.mark.parametrize("ref, expected", [
    ("runs/demo/iter01/solver", None),  # a local path stays a path
    ("hf://me/demo-solver@iter01", dict(repo_type="model", repo="me/demo-solver", config=None, revision="iter01")),
    ("hf://Qwen/Qwen3-4B-Base", dict(repo_type="model", repo="Qwen/Qwen3-4B-Base", config=None, revision="main")),
    ("hf://datasets/me/demo-questions/iter01-train",  # a dataset artifact by its config, main by default
     dict(repo_type="dataset", repo="me/demo-questions", config="iter01-train", revision="main")),
    ("hf://datasets/me/demo-questions/iter02-raw@" + "a" * 40,  # pinned to a commit
     dict(repo_type="dataset", repo="me/demo-questions", config="iter02-raw", revision="a" * 40)),
])
def test_references_parse(ref, expected):
    assert parse(ref) == expected


@pytest.mark.parametrize("ref", ["hf://me", "hf://me/a/b", "hf://datasets/me/questions", "hf://me/a@b@c"])
def test_malformed_references_are_refused(ref):
    with pytest.raises(SystemExit):
        parse(ref)


@pytest.mark.parametrize("base, expected", [
    (dict(ref="Qwen/Qwen3-4B-Base", commit="c" * 40), "Qwen/Qwen3-4B-Base"),  # a Hub id, its commit recorded
    (dict(ref="Qwen/Qwen3-4B-Base", commit=None), "Qwen/Qwen3-4B-Base"),  # a Hub id while offline
    (dict(ref="hf://me/micro-base@main", commit="c" * 40), "me/micro-base"),  # a reference: its repo
    (dict(ref=str(ROOT / "stages"), commit=None), None),  # a local folder has no repo id for the card
])
def test_the_card_names_the_base_by_repo_id(base, expected):
    assert _base_repo({"inputs": {"--base-model": base}}) == expected


def test_the_dataset_card_keeps_the_configs_and_has_one_section_per_artifact():
    front = "---\nconfigs:\n- config_name: iter01-raw\n---\n"
    summary = dict(stage="label_questions", iteration=1, kept=7, command="python stages/label_questions.py ...")
    labeled = dict(artifact="iter01-labeled", files={"iter01-labeled": "labeled.parquet", "iter01-train": "train.parquet"},
                   summary=summary)
    raw = dict(artifact="iter01-raw", files={"iter01-raw": "questions.parquet"}, summary=dict(stage="generate_questions"))
    card = dataset_card(front + "\nold text\n", "me/run-questions", [labeled, raw, labeled])  # one marker per config
    assert card.startswith(front) and "old text" not in card
    assert card.count("## iter01-labeled") == 1 and card.index("## iter01-labeled") < card.index("## iter01-raw")
    assert "| kept | 7 |" in card and "load_dataset('me/run-questions', 'iter01-labeled')" in card


HUB_STATE = """
    import json, sys
    from datasets import get_dataset_config_names, load_dataset
    from huggingface_hub import HfApi, hf_hub_download
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    ns, run, base, local = sys.argv[1:5]
    api, out = HfApi(), {}
    for role in ("challenger", "solver"):
        repo = f"{ns}/{run}-{role}"
        branches = sorted(b.name for b in api.list_repo_refs(repo).branches)
        out[role] = dict(private=api.model_info(repo).private, branches=branches,
                         files={b: sorted(api.list_repo_files(repo, revision=b)) for b in branches},
                         card=open(hf_hub_download(repo, "README.md", revision="iter01")).read())
    repo = f"{ns}/{run}-questions"
    out["questions"] = dict(private=api.dataset_info(repo).private, sha=api.dataset_info(repo).sha,
                            configs=sorted(get_dataset_config_names(repo)),
                            files=sorted(api.list_repo_files(repo, repo_type="dataset")),
                            card=open(hf_hub_download(repo, "README.md", repo_type="dataset")).read(),
                            train=load_dataset(repo, "iter01-train", split="train").to_list())
    # the adapter as PEFT loads it from its branch, against the local file it was pushed from
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), f"{ns}/{run}-solver", revision="iter01")
    hub_weights, local_weights = get_peft_model_state_dict(model), load_file(f"{local}/solver/adapter_model.safetensors")
    out["lora"] = dict(tensors=len(local_weights), same_names=sorted(hub_weights) == sorted(local_weights),
                       max_diff=max((hub_weights[k] - local_weights[k]).abs().max().item() for k in local_weights))
    print(json.dumps(out))
"""


def test_a_driver_iteration_puts_every_artifact_on_the_hub(first, hub, logs):
    from datasets import Dataset

    it = first["it"]
    state = client(hub, logs, HUB_STATE, hub.user, RUN, first["base"], it)
    adapter = {"DONE", "README.md", "summary.json", "adapter_config.json", "adapter_model.safetensors"}
    assert state["challenger"]["branches"] == ["iter01", "main"]
    assert adapter <= set(state["challenger"]["files"]["iter01"])
    # the Solver repo: the base's evaluation on iter00, the Solver of iteration 1 and its evaluation on iter01
    assert state["solver"]["branches"] == ["iter00", "iter01", "main"]
    evaluation = {"evaluate/DONE", "evaluate/summary.json", "evaluate/results.json", "evaluate/README.md"}
    assert evaluation <= set(state["solver"]["files"]["iter00"]) and not adapter & set(state["solver"]["files"]["iter00"])
    assert adapter | evaluation <= set(state["solver"]["files"]["iter01"])
    assert state["questions"]["configs"] == ["iter01-labeled", "iter01-probe", "iter01-raw", "iter01-train"]
    markers = {f"summaries/iter01-{c}.json" for c in ("raw", "labeled", "train", "probe")}
    assert markers <= set(state["questions"]["files"])
    assert state["challenger"]["private"] and state["solver"]["private"] and state["questions"]["private"]

    # load_dataset and PeftModel work as they are, and give back exactly what the stages wrote
    assert state["questions"]["train"] == Dataset.from_parquet(str(it / "labeled" / "train.parquet")).to_list()
    assert state["lora"]["tensors"] > 0 and state["lora"]["same_names"] and state["lora"]["max_diff"] == 0.0

    # the stages read their inputs from the Hub and recorded the commit of each
    solver = json.loads((it / "solver" / "summary.json").read_text())
    train = solver["inputs"]["--train"]
    assert train["ref"] == f"hf://datasets/{hub.user}/{RUN}-questions/iter01-train" and len(train["commit"]) == 40
    generated = json.loads((it / "questions" / "summary.json").read_text())["inputs"]["--challenger-adapter"]
    assert generated["ref"] == f"hf://{hub.user}/{RUN}-challenger@iter01" and len(generated["commit"]) == 40

    # the cards: base, iteration, parents with commits, the numbers, the command that reproduces it
    card = state["solver"]["card"]
    assert "library_name: peft" in card and "iteration 1" in card and solver["base_identity"] in card
    assert f"`--train` `{train['ref']}` at commit `{train['commit']}`" in card
    assert f"| questions | {solver['questions']} |" in card
    assert solver["command"] in card and "--hub-repo" in solver["command"]
    labeled = json.loads((it / "labeled" / "summary.json").read_text())
    assert labeled["data_parallel"] == 2 and labeled["inputs"]["--questions"]["ref"].startswith("hf://datasets/")
    questions_card = state["questions"]["card"]
    assert "configs:" in questions_card  # datasets' front matter is kept
    assert "## iter01-labeled" in questions_card and "## iter01-raw" in questions_card
    assert f"| kept | {labeled['kept']} |" in questions_card and labeled["command"] in questions_card


HALF_PUSH = """
    import json, sys
    from huggingface_hub import CommitOperationDelete, HfApi
    repo = sys.argv[1]
    # the label stage's push dying after its data and before its marker: the data stays, the marker goes
    markers = ["summaries/iter01-labeled.json", "summaries/iter01-train.json"]
    HfApi().create_commit(repo, [CommitOperationDelete(m) for m in markers], repo_type="dataset", commit_message="half")
    print(json.dumps({}))
"""


@pytest.fixture(scope="module")
def second(first, hub, quick_base, logs, tmp_path_factory) -> dict:
    """Another machine (empty runs/, empty HF home) with the Hub as its only storage, after the label
    stage's push died between its data and its marker."""
    client(hub, logs, HALF_PUSH, f"{hub.user}/{RUN}-questions")
    machine = tmp_path_factory.mktemp("machine2")
    proc = driver(hub, logs, quick_base, machine / "runs", HUB_ONLY="1", **fresh_machine(machine / "hf-home"))
    return dict(runs=machine / "runs", out=proc.stderr + proc.stdout)


def test_a_fresh_machine_resumes_from_the_hub_alone(second, hub, logs):
    out = second["out"]
    skipped = sorted(line.split("] ", 1)[1].split(":")[0] for line in out.splitlines() if SKIPPED in line)
    # the base's evaluation, the Challenger, the questions, the Solver and its evaluation
    assert skipped == ["evaluate", "evaluate", "generate_questions", "train_challenger", "train_solver"], skipped
    # data without its marker is not complete: the label stage ran again, from the Hub's questions
    assert "label_questions: iteration 1 done" in out
    assert f"to hf://datasets/{hub.user}/{RUN}-questions/iter01-labeled" in out
    # nothing but the run's log, times and report stayed here; the report was read from the Hub
    left = sorted(p.relative_to(second["runs"]).as_posix() for p in second["runs"].rglob("*") if p.is_file())
    assert not [p for p in left if "/iter" in p], left
    report = (second["runs"] / RUN / "report" / "report.md").read_text()
    assert f"### hf://{hub.user}/{RUN}" in report and "| 0 |" in report and "| 1 |" in report
    files = client(hub, logs, """
        import json, sys
        from huggingface_hub import HfApi
        print(json.dumps(HfApi().list_repo_files(sys.argv[1], repo_type="dataset")))
    """, f"{hub.user}/{RUN}-questions")
    assert {"summaries/iter01-labeled.json", "summaries/iter01-train.json"} <= set(files)


def test_one_stage_reruns_from_hub_references_only(first, hub, logs, tmp_path):
    """label_questions reads its questions by reference, generate_questions its Challenger pinned to a
    commit; both into a new folder, on a machine with an empty HF cache."""
    sha = client(hub, logs, """
        import json, sys
        from huggingface_hub import HfApi
        api = HfApi()
        print(json.dumps({"challenger": api.model_info(sys.argv[1], revision="iter01").sha,
                          "questions": api.dataset_info(sys.argv[2]).sha}))
    """, f"{hub.user}/{RUN}-challenger", f"{hub.user}/{RUN}-questions")
    env = fresh_machine(tmp_path / "hf-home")
    questions = f"hf://datasets/{hub.user}/{RUN}-questions/iter01-raw"
    common = ["--base-model", first["base"], "--iteration", "1"]
    stage(hub, logs, "label_questions", *common, "--questions", questions, "--output", tmp_path / "labeled",
          *TINY["labeled"], env=env)
    summary = json.loads((tmp_path / "labeled" / "summary.json").read_text())
    assert summary["inputs"]["--questions"] == {"ref": questions, "commit": sha["questions"]}
    assert summary["questions"] == json.loads((first["it"] / "labeled" / "summary.json").read_text())["questions"]

    challenger = f"hf://{hub.user}/{RUN}-challenger@{sha['challenger']}"
    stage(hub, logs, "generate_questions", *common, "--challenger-adapter", challenger, "--output",
          tmp_path / "questions", "--num-samples", "8", "--max-new-tokens", "32", env=env)
    summary = json.loads((tmp_path / "questions" / "summary.json").read_text())
    assert summary["inputs"]["--challenger-adapter"] == {"ref": challenger, "commit": sha["challenger"]}


FILES = """
    import json, sys
    from huggingface_hub import HfApi
    repo, kind, revision = sys.argv[1:4]
    try:
        print(json.dumps(sorted(HfApi().list_repo_files(repo, repo_type=kind, revision=revision))))
    except Exception as e:
        print(json.dumps([type(e).__name__]))
"""


def copy_artifact(first, name, tmp_path) -> Path:
    """A complete local artifact whose push never happened: a rerun pushes it without redoing the work."""
    shutil.copytree(first["it"] / name, tmp_path / name)
    return tmp_path / name


def test_a_failed_commit_is_retried(first, hub, logs, tmp_path):
    repo = f"{hub.user}/retry-solver"
    output = copy_artifact(first, "solver", tmp_path)
    hub.fail_next("commit", status=500)
    proc = stage(hub, logs, "train_solver", "--base-model", first["base"], "--iteration", "1",
                 "--train", first["it"] / "labeled", "--output", output, "--hub-repo", repo, *TINY["solver"])
    assert "retrying" in proc.stderr and f"pushed {output} to hf://{repo}@iter01" in proc.stderr
    assert [r["status"] for r in hub.requests() if r["endpoint"] == "commit" and repo in r["path"]] == [500, 200]
    assert {"DONE", "summary.json", "adapter_model.safetensors"} <= set(client(hub, logs, FILES, repo, "model", "iter01"))


@pytest.mark.parametrize("artifact, fault", [("solver", "drop"), ("labeled", "fail")])
def test_a_push_that_keeps_failing_is_not_complete_and_a_rerun_finishes(first, hub, logs, tmp_path, artifact, fault):
    output = copy_artifact(first, artifact, tmp_path)
    common = ["--base-model", first["base"], "--iteration", "1", "--output", output]
    if artifact == "solver":
        repo, kind, revision = f"{hub.user}/{fault}-solver", "model", "iter01"
        args, ref = ["train_solver", *common, "--train", first["it"] / "labeled", *TINY["solver"]], f"hf://{repo}@iter01"
        marker = "DONE"
    else:
        repo, kind, revision = f"{hub.user}/{fault}-questions", "dataset", "main"
        args, ref = ["label_questions", *common, "--questions", first["it"] / "questions", *TINY["labeled"]], \
            f"hf://datasets/{repo}/iter01-train"
        marker = "summaries/iter01-train.json"
    if fault == "drop":
        hub.drop_next("commit", count=3, after_bytes=2048)  # every try of the push loses its connection
    else:
        hub.fail_next("commit", count=3, status=503)
    proc = stage(hub, logs, *args, "--hub-repo", repo, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"push of {output} to" in errors[0] and "rerun" in errors[0], errors
    assert marker not in client(hub, logs, FILES, repo, kind, revision)
    assert (output / "DONE").is_file()  # the local artifact stays complete
    # a stage that reads it refuses it as incomplete
    proc = stage(hub, logs, "evaluate" if artifact == "solver" else "train_solver", "--base-model", first["base"],
                 "--iteration", "1", "--solver-adapter" if artifact == "solver" else "--train", ref,
                 "--output", tmp_path / "reader", check=False)
    assert proc.returncode == 2 and "incomplete on the Hub" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "reader").exists()

    proc = stage(hub, logs, *args, "--hub-repo", repo)
    assert "not on the Hub yet: pushing it" in proc.stderr  # the work is not redone, only the push
    assert marker in client(hub, logs, FILES, repo, kind, revision)
    proc = stage(hub, logs, *args, "--hub-repo", repo)
    assert SKIPPED in proc.stderr


@pytest.mark.parametrize("token, message", [("", "no Hub token"), ("hf_not_a_valid_token", "rejected the token")])
def test_a_missing_or_rejected_token_fails_before_any_work(first, hub, logs, tmp_path, token, message):
    proc = stage(hub, logs, "generate_questions", "--base-model", first["base"], "--iteration", "1",
                 "--output", tmp_path / "questions", "--hub-repo", f"{hub.user}/never", env={"HF_TOKEN": token},
                 check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert not tmp_path.joinpath("questions").exists() and not list(tmp_path.glob(".questions*"))
    if token:  # a Hub input with a rejected token: the same error, also before any work
        proc = stage(hub, logs, "label_questions", "--base-model", first["base"], "--iteration", "1",
                     "--questions", f"hf://datasets/{hub.user}/{RUN}-questions/iter01-raw", "--output",
                     tmp_path / "labeled", env={"HF_TOKEN": token}, check=False)
        assert proc.returncode == 2 and message in proc.stderr and not tmp_path.joinpath("labeled").exists()


def test_the_token_is_in_no_file_and_no_log(first, second, hub, logs, tmp_path_factory):
    """Last in this file: every run folder, HF home and cache, the Hub's stored files, every output."""
    needle = hub.token.encode()
    root = tmp_path_factory.getbasetemp()  # runs, HF homes, the server's store and log, every test's folders
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) > 100
    assert [str(p) for p in files if needle in p.read_bytes()] == []
    assert all(hub.token not in out for out in logs) and len(logs) > 10
    hits = hub.find(hub.token)
    assert hits and all(hit.endswith("header authorization") for hit in hits), hits[:5]
