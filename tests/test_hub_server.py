"""The local Hub (tests/hub_server.py) as the real clients see it.

Each scenario runs huggingface_hub / datasets / peft in a subprocess with `hub.env` (the pytest process
stays offline) and prints one JSON line; the assertions read that line and the server's request log. The
fault tests also pin down what the clients do by themselves: which failures they retry, which they raise.
"""
import hashlib
import json
import os
import textwrap

import pytest

from hub_server import start_server


def client(hub, code, *args, env=None):
    """Run a client script with hub.env and return the JSON object it printed last."""
    out = hub.python(textwrap.dedent(code), *args, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def log_for(hub, endpoint, needle):
    """Statuses of the requests to `endpoint` whose path contains `needle` (a repo id or a sha256; no repo
    name in this file is a prefix of another), oldest first."""
    return [r["status"] for r in hub.requests() if r["endpoint"] == endpoint and needle in r["path"]]


def assert_token_only_in_auth_headers(hub):
    hits = hub.find(hub.token)
    assert hits, "the clients never sent the token at all"
    assert all(hit.endswith("header authorization") for hit in hits), hits


WHOAMI = """
    import json
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    try:
        print(json.dumps({"name": HfApi().whoami()["name"]}))
    except HfHubHTTPError as e:
        print(json.dumps({"status": e.response.status_code, "message": str(e)}))
"""


def test_whoami_accepts_the_session_token_and_rejects_another(hub):
    assert client(hub, WHOAMI) == {"name": hub.user}
    # Stages read the token from HF_TOKEN: a wrong one is a 401 that the client explains.
    rejected = client(hub, WHOAMI, env={"HF_TOKEN": "hf_not_a_valid_token"})
    assert rejected["status"] == 401
    assert "token from HF_TOKEN environment variable is invalid" in rejected["message"]


MODEL_ROUND_TRIP = """
    import hashlib, json, sys
    from pathlib import Path
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    repo, main_dir, iter_dir = sys.argv[1:4]
    api, out = HfApi(), {}
    api.create_repo(repo, private=True)
    try:
        api.create_repo(repo, private=True)
    except HfHubHTTPError as e:
        out["second_create"] = e.response.status_code
    api.create_repo(repo, private=True, exist_ok=True)
    first = api.upload_folder(folder_path=main_dir, repo_id=repo, commit_message="base files")
    api.create_branch(repo, branch="iter01")
    second = api.upload_folder(folder_path=iter_dir, repo_id=repo, revision="iter01")
    again = api.upload_folder(folder_path=iter_dir, repo_id=repo, revision="iter01")
    out["unchanged_upload_is_no_commit"] = again.oid == second.oid
    out["commits"] = {"main": first.oid, "iter01": second.oid}
    out["branches"] = {b.name: b.target_commit for b in api.list_repo_refs(repo).branches}
    out["files"] = {rev: sorted(api.list_repo_files(repo, revision=rev)) for rev in ("main", "iter01")}
    info = api.model_info(repo, revision="iter01", files_metadata=True)
    out["private"], out["lfs"] = info.private, [s.rfilename for s in info.siblings if s.lfs]
    digest = lambda path: hashlib.sha256(Path(path).read_bytes()).hexdigest()
    out["download"] = digest(hf_hub_download(repo, "big.dat", revision="iter01"))
    snapshot = Path(snapshot_download(repo, revision="iter01"))
    out["snapshot"] = {p.relative_to(snapshot).as_posix(): digest(p) for p in snapshot.rglob("*")
                       if p.is_file()}
    try:
        api.repo_info(repo, token=False)
    except RepositoryNotFoundError as e:
        out["anonymous"] = e.response.status_code
    print(json.dumps(out))
"""


def test_model_repo_round_trip_on_a_branch(hub, tmp_path):
    canary = "canary-" + os.urandom(6).hex()
    files = {"main/big.dat": os.urandom(10_500_000),  # over 10 MB: LFS by size alone
             "main/notes.txt": f"base notes {canary}\n".encode(),
             "iter01/notes.txt": b"iter01 notes\n", "iter01/sub/config.json": b'{"r": 8}\n'}
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    out = client(hub, MODEL_ROUND_TRIP, f"{hub.user}/round-trip", tmp_path / "main", tmp_path / "iter01")

    assert out["second_create"] == 409  # exists; exist_ok=True swallows exactly this
    assert out["unchanged_upload_is_no_commit"]  # preupload's oid lets the client skip unchanged files
    assert out["branches"] == out["commits"]
    assert out["files"] == {"main": [".gitattributes", "big.dat", "notes.txt"],
                            "iter01": [".gitattributes", "big.dat", "notes.txt", "sub/config.json"]}
    assert out["private"] and out["lfs"] == ["big.dat"]
    assert out["download"] == sha256(files["main/big.dat"])
    on_iter01 = {"big.dat": files["main/big.dat"], "notes.txt": files["iter01/notes.txt"],
                 "sub/config.json": files["iter01/sub/config.json"]}
    out["snapshot"].pop(".gitattributes")
    assert out["snapshot"] == {path: sha256(data) for path, data in on_iter01.items()}
    assert out["anonymous"] == 401  # a private repo does not exist for a caller without a token

    assert log_for(hub, "lfs-upload", sha256(files["main/big.dat"])) == [200]  # once, via the batch API
    assert_token_only_in_auth_headers(hub)
    # The search sees file contents both where they are stored and base64-encoded in the commit body.
    assert {hit.split()[0] for hit in hub.find(canary)} == {"blob", "request"}


PEFT_ADAPTER = """
    import json, sys
    import torch
    from huggingface_hub import HfApi
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    repo, folder = sys.argv[1:3]
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=64, max_position_embeddings=64)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)

    def base():
        torch.manual_seed(0)
        return LlamaForCausalLM(config)

    def lora_weights(model):
        return {k: v for k, v in model.state_dict().items() if "lora_" in k}

    trained = get_peft_model(base(), lora)
    torch.manual_seed(1)  # weights that no fresh LoRA init reproduces
    for name, param in trained.named_parameters():
        if "lora_" in name:
            param.data.uniform_(-1, 1)
    trained.save_pretrained(folder)
    api = HfApi()
    api.create_repo(repo, private=True)
    api.create_branch(repo, branch="iter01")
    api.upload_folder(folder_path=folder, repo_id=repo, revision="iter01")

    want = lora_weights(trained)
    got = lora_weights(PeftModel.from_pretrained(base(), repo, revision="iter01"))
    fresh = lora_weights(get_peft_model(base(), lora))
    print(json.dumps({
        "tensors": len(want), "same_names": sorted(want) == sorted(got),
        "max_diff": max((want[k] - got[k]).abs().max().item() for k in want),
        "fresh_diff": max((want[k] - fresh[k]).abs().max().item() for k in want),
        "files": {rev: sorted(api.list_repo_files(repo, revision=rev)) for rev in ("main", "iter01")},
    }))
"""


def test_peft_adapter_loads_from_its_branch(hub, tmp_path):
    out = client(hub, PEFT_ADAPTER, f"{hub.user}/adapter-challenger", tmp_path / "adapter")
    assert out["tensors"] == 8 and out["same_names"]  # 2 layers x (q, v) x (A, B)
    assert out["max_diff"] == 0.0 and out["fresh_diff"] > 0.1
    assert out["files"]["main"] == [".gitattributes"]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(out["files"]["iter01"])
    assert_token_only_in_auth_headers(hub)


DATASET_CONFIGS = """
    import json, sys
    from datasets import Dataset, load_dataset
    from huggingface_hub import HfApi

    repo, raw, train = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    Dataset.from_dict(raw).push_to_hub(repo, config_name="iter01-raw", private=True)
    Dataset.from_dict(train).push_to_hub(repo, config_name="iter01-train", private=True)  # edits the card
    print(json.dumps({
        "train": load_dataset(repo, "iter01-train", split="train").to_dict(),
        "raw": load_dataset(repo, "iter01-raw", split="train").to_dict(),
        "files": sorted(HfApi().list_repo_files(repo, repo_type="dataset")),
        "private": HfApi().dataset_info(repo).private,
    }))
"""


def test_dataset_configs_share_one_repo(hub):
    raw = {"raw": ["<question>1+1?</question> \\boxed{2}", "no question"], "question": ["1+1?", None]}
    train = {"question": ["1+1?", "2+3?"], "answer": ["2", "5"], "consistency": [1.0, 0.75]}
    repo = f"{hub.user}/run-questions"
    out = client(hub, DATASET_CONFIGS, repo, json.dumps(raw), json.dumps(train))
    assert out["train"] == train and out["raw"] == raw
    assert out["files"] == [".gitattributes", "README.md", "iter01-raw/train-00000-of-00001.parquet",
                            "iter01-train/train-00000-of-00001.parquet"]
    assert out["private"]
    assert 200 in log_for(hub, "validate-yaml", "")  # the card's YAML was checked before each commit
    assert_token_only_in_auth_headers(hub)


UPLOAD_AND_RETRY = """
    import json, sys
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    repo, folder = sys.argv[1:3]
    api = HfApi()
    api.create_repo(repo, private=True)
    head = lambda: api.list_repo_refs(repo).branches[0].target_commit
    out = {"before": head()}
    try:
        api.upload_folder(folder_path=folder, repo_id=repo)
    except HfHubHTTPError as e:
        out["error"] = f"HfHubHTTPError {e.response.status_code}"
    except httpx.TransportError as e:
        out["error"] = f"httpx.{type(e).__name__}"
    out["after_error"] = {"head": head(), "files": api.list_repo_files(repo)}
    out["retry"] = api.upload_folder(folder_path=folder, repo_id=repo).oid
    out["files"] = sorted(api.list_repo_files(repo))
    print(json.dumps(out))
"""
ADAPTER_FILES = [".gitattributes", "adapter_model.safetensors", "notes.txt"]


def adapter_folder(path):
    """A folder with a small LFS file (by suffix) and a text file; returns the LFS file's sha256."""
    path.mkdir()
    weights = os.urandom(300_000)
    (path / "adapter_model.safetensors").write_bytes(weights)
    (path / "notes.txt").write_text("x" * 200_000)  # makes the commit body long enough to cut mid-way
    return sha256(weights)


def test_commit_500_is_raised_not_retried_and_leaves_nothing(hub, tmp_path):
    weights = adapter_folder(tmp_path / "adapter")
    hub.fail_next("commit", status=500)
    repo = f"{hub.user}/fault-commit-500"
    out = client(hub, UPLOAD_AND_RETRY, repo, tmp_path / "adapter")
    assert out["error"] == "HfHubHTTPError 500"
    assert out["after_error"] == {"head": out["before"], "files": [".gitattributes"]}
    assert out["retry"] != out["before"] and out["files"] == ADAPTER_FILES
    assert log_for(hub, "commit", repo) == [500, 200]  # create_commit does not retry; its caller must
    assert log_for(hub, "lfs-upload", weights) == [200]  # the retry found the LFS blob already there


def test_connection_dropped_mid_commit_raises_and_commits_nothing(hub, tmp_path):
    adapter_folder(tmp_path / "adapter")
    hub.drop_next("commit", after_bytes=4096)
    repo = f"{hub.user}/fault-commit-drop"
    out = client(hub, UPLOAD_AND_RETRY, repo, tmp_path / "adapter")
    assert out["error"] in ("httpx.RemoteProtocolError", "httpx.WriteError", "httpx.ReadError")
    assert out["after_error"] == {"head": out["before"], "files": [".gitattributes"]}
    assert out["files"] == ADAPTER_FILES
    assert log_for(hub, "commit", repo) == [None, 200]  # None: no answer, the connection was cut


def test_transient_upload_failures_are_retried_by_the_client(hub, tmp_path):
    weights = adapter_folder(tmp_path / "adapter")
    # preupload, the LFS batch call and the LFS PUT go through http_backoff: one 1 s backoff each.
    hub.fail_next("preupload", status=503)
    hub.fail_next("lfs-batch", status=500)
    hub.drop_next("lfs-upload", after_bytes=65536)
    repo = f"{hub.user}/fault-transient"
    out = client(hub, UPLOAD_AND_RETRY, repo, tmp_path / "adapter")
    assert "error" not in out and out["after_error"]["files"] == out["files"] == ADAPTER_FILES
    # (the last 200s are the script's second, no-op upload)
    assert log_for(hub, "preupload", repo) == [503, 200, 200]
    assert log_for(hub, "lfs-batch", repo) == [500, 200, 200]
    assert log_for(hub, "lfs-upload", weights) == [None, 200]


SLOW_DOWNLOAD = """
    import json, sys, time
    from huggingface_hub import HfApi, hf_hub_download

    repo = sys.argv[1]
    api = HfApi()
    api.create_repo(repo)
    api.upload_file(path_or_fileobj=b"patience\\n", path_in_repo="slow.txt", repo_id=repo)
    start = time.monotonic()
    content = open(hf_hub_download(repo, "slow.txt")).read()
    print(json.dumps({"content": content, "seconds": time.monotonic() - start}))
"""


@pytest.mark.parametrize("etag_timeout, heads", [
    ("10", ["HEAD"]),  # the default HEAD timeout (10 s): a slow answer is only slow
    ("1", ["HEAD", "HEAD"]),  # past it, hf_hub_download asks again with a 60 s timeout before failing
])
def test_slow_answers_still_work(hub, etag_timeout, heads):
    hub.slow("resolve", 1.5, count=2)
    repo = f"{hub.user}/slow-{etag_timeout}s"
    out = client(hub, SLOW_DOWNLOAD, repo, env={"HF_HUB_ETAG_TIMEOUT": etag_timeout})
    assert out["content"] == "patience\n" and out["seconds"] >= 2.4  # the delays did happen
    methods = [r["method"] for r in hub.requests() if r["endpoint"] == "resolve" and repo in r["path"]]
    assert methods == heads + ["GET"]


PUSH_THEN_READ = """
    import json, sys
    from huggingface_hub import HfApi, hf_hub_download

    repo, step = sys.argv[1:3]
    api = HfApi()
    if step == "push":
        api.create_repo(repo, repo_type="dataset", private=True)
        api.create_branch(repo, branch="iter01", repo_type="dataset")
        api.upload_file(path_or_fileobj=b"kept\\n", path_in_repo="kept.txt", repo_id=repo,
                        repo_type="dataset", revision="iter01")
    refs = {b.name: b.target_commit for b in api.list_repo_refs(repo, repo_type="dataset").branches}
    path = hf_hub_download(repo, "kept.txt", repo_type="dataset", revision="iter01", force_download=True)
    print(json.dumps({"refs": refs, "content": open(path).read()}))
"""


def test_a_restarted_server_keeps_its_repos(hub):
    repo = f"{hub.user}/persisted"
    before = client(hub, PUSH_THEN_READ, repo, "push")
    hub.restart()  # same store folder, same port
    after = client(hub, PUSH_THEN_READ, repo, "read")
    assert after == before and after["content"] == "kept\n" and set(after["refs"]) == {"main", "iter01"}


def test_in_process_server_shares_its_control(hub, tmp_path):
    url, control = start_server(tmp_path / "store", {"hf_inproc": "someone"})
    try:
        control.fail_next("whoami", status=503)
        env = {"HF_ENDPOINT": url, "HF_TOKEN": "hf_inproc"}  # hub.env, pointed at this server instead
        assert client(hub, WHOAMI, env=env)["status"] == 503  # whoami is not retried
        assert client(hub, WHOAMI, env=env) == {"name": "someone"}
        statuses = [(r["endpoint"], r["status"]) for r in control.requests()]
        assert statuses == [("whoami", 503), ("whoami", 200)]
    finally:
        control.stop()
