"""A small Hugging Face Hub look-alike that the real huggingface_hub and datasets clients talk to in tests.

Nothing leaves 127.0.0.1: a client subprocess gets HF_ENDPOINT pointing here (with HF_HUB_DISABLE_XET=1,
so uploads take the LFS path) and is driven only through the real client code. The routes are the ones
huggingface_hub 1.33, datasets 5.2 and peft 0.21 call, read from their sources ({r} = /{ns}/{name}, with a
/datasets prefix for dataset repos; {api} = /api/{models|datasets}/{ns}/{name}):

  GET  /api/whoami-v2                   401 "Invalid credentials in Authorization header" on a bad token
  POST /api/validate-yaml               create_commit checks a README.md's front matter here first
  POST /api/repos/create                409 with the url when it exists (create_repo(exist_ok=True) reads it)
  DELETE /api/repos/delete
  GET  {api}  {api}/revision/{rev}      repo info: sha, private, siblings (with sizes and LFS if ?blobs)
  POST {api}/preupload/{rev}            regular or lfs per file, and the oid already there (unchanged files
                                        are skipped by the client)
  POST {r}.git/info/lfs/objects/batch   LFS batch API, "basic" transfer, upload + verify actions
  PUT  /_lfs/{sha256}?size=&sig=        where the batch API sends the bytes: signed URL, no token
  POST /_lfs/{sha256}/verify
  POST {api}/commit/{branch}            NDJSON: header (parentCommit -> 412), file, lfsFile, deletedFile,
                                        deletedFolder
  POST|DELETE {api}/branch/{name}       create from `startingPoint` (409 if it exists) / delete
  GET  {api}/refs  {api}/tree/{rev}[/{path}]  {api}/commits/{rev}   (tree, commits: Link-header pages)
  POST {api}/paths-info/{rev}
  HEAD|GET {r}/resolve/{rev}/{path}     ETag, X-Repo-Commit, X-Linked-Etag/-Size, Content-Length, Range
  POST /_admin/call                     faults, request log, needle search (never logged nor faulted)

A revision is a branch name or a 40-hex commit id. Every commit gets a fresh id and a full file table; a
new repo starts with an "initial commit" holding .gitattributes, as on the Hub. A private repo answers
"Repository not found" (401 without a token, 404 with one) to anyone who cannot write to its namespace.

On disk under --root: blobs/<sha256> (all file contents), repos/<kind>s/<ns>/<name>/repo.json (privacy,
branch heads) and commits/<id>.json; requests/<n>.bin holds this process's request bodies for `find`.
Every write is a rename of a finished temp file, so a killed server leaves no half-written state.

Faults are set at run time for an endpoint name (the request log's `endpoint`: "commit", "lfs-upload",
"preupload", "resolve", ...): fail the next N requests with a status, hang up after reading part of the
next N request bodies, or sleep before answering.

    python tests/hub_server.py --root /tmp/hub --port 0 --token hf_test  # prints its port, serves till killed
    url, control = start_server("/tmp/hub", {"hf_test": "kit-user"})     # in this process; control.stop()
"""
import argparse
import base64
import hashlib
import hmac
import json
import re
import secrets
import shutil
import socket
import sys
import threading
import time
import traceback
import urllib.request
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

try:
    import yaml  # only to check README front matter; present wherever huggingface_hub is
except ImportError:
    yaml = None

KINDS = {"models": "model", "datasets": "dataset"}
URL_PREFIX = {"model": "", "dataset": "datasets/"}
COMMIT_ID = re.compile(r"^[0-9a-f]{40}$")
REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
BRANCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
# Tracked by LFS in a new repo's .gitattributes, so preupload sends these to LFS at any size.
LFS_SUFFIXES = (".7z", ".arrow", ".bin", ".ckpt", ".gguf", ".gz", ".h5", ".msgpack", ".npy", ".npz",
                ".onnx", ".parquet", ".pickle", ".pkl", ".pt", ".pth", ".safetensors", ".tar", ".zip")
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)
ADMIN_METHODS = ("add_fault", "clear_faults", "requests", "clear_requests", "find")


class HubError(Exception):
    """An error answer: JSON {"error": message, **fields}, plus the X-Error-Code the client maps to an
    exception class (RepoNotFound, RevisionNotFound, EntryNotFound) and any extra headers."""

    def __init__(self, status, message, code=None, headers=None, **fields):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers, self.fields = headers or {}, fields


def now_iso():
    # The one date format the client parses: 2024-01-31T12:00:00.000Z
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_oid(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_atomic(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def flag(values, default="false"):
    """A boolean query or form value, as httpx writes them ("true"/"false")."""
    return (values or [default])[0].lower() in ("true", "1")


class Store:
    """Repos, commits and blobs on disk. Commits never change, so they are cached once read."""

    def __init__(self, root):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()  # branch heads move only under it
        self._commits = {}

    def _repo_dir(self, kind, repo_id):
        return self.root / "repos" / f"{kind}s" / repo_id

    def load_repo(self, kind, repo_id):
        path = self._repo_dir(kind, repo_id) / "repo.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save_repo(self, kind, repo_id, meta):
        write_atomic(self._repo_dir(kind, repo_id) / "repo.json", json.dumps(meta, indent=1).encode())

    def delete_repo(self, kind, repo_id):
        shutil.rmtree(self._repo_dir(kind, repo_id))

    def blob_path(self, sha256):
        return self.root / "blobs" / sha256

    def blob_size(self, sha256):
        path = self.blob_path(sha256)
        ok = re.fullmatch(r"[0-9a-f]{64}", sha256) and path.is_file()
        return path.stat().st_size if ok else None

    def put_blob(self, data):
        sha256 = hashlib.sha256(data).hexdigest()
        if self.blob_size(sha256) != len(data):
            write_atomic(self.blob_path(sha256), data)
        return sha256

    def file_entry(self, data=None, sha256=None, size=None):
        """A file-table entry: regular from bytes, LFS from (sha256, size) of an uploaded blob."""
        if data is not None:
            return {"sha256": self.put_blob(data), "size": len(data), "lfs": False, "oid": git_blob_oid(data)}
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
        return {"sha256": sha256, "size": size, "lfs": True, "oid": git_blob_oid(pointer),
                "pointer_size": len(pointer)}

    def commit(self, kind, repo_id, oid):
        key = (kind, repo_id, oid)
        if key not in self._commits:
            path = self._repo_dir(kind, repo_id) / "commits" / f"{oid}.json"
            if not path.is_file():
                return None
            self._commits[key] = json.loads(path.read_text())
        return self._commits[key]

    def add_commit(self, kind, repo_id, parents, files, title, message, author):
        oid = hashlib.sha1(f"{kind}/{repo_id} {parents} {uuid.uuid4()}".encode()).hexdigest()
        commit = {"id": oid, "parents": parents, "title": title, "message": message, "date": now_iso(),
                  "authors": [author], "files": files}
        write_atomic(self._repo_dir(kind, repo_id) / "commits" / f"{oid}.json", json.dumps(commit).encode())
        return oid

    def resolve(self, kind, repo_id, meta, revision):
        """Branch name (or refs/heads/<name>) or commit id -> commit id; None when unknown."""
        revision = revision.removeprefix("refs/heads/")
        if revision in meta["branches"]:
            return meta["branches"][revision]
        if COMMIT_ID.fullmatch(revision) and self.commit(kind, repo_id, revision) is not None:
            return revision
        return None

    def history(self, kind, repo_id, oid):
        while oid:
            commit = self.commit(kind, repo_id, oid)
            yield commit
            oid = commit["parents"][0] if commit["parents"] else None


def b64_forms(needle):
    """The needle as it reads inside any base64 text (three alignments), e.g. a commit's `file` lines."""
    forms = []
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + needle)
        forms.append(encoded[(pad * 4 + 2) // 3: (pad + len(needle)) // 3 * 4])
    return [f for f in forms if len(f) >= 8]


class Faults:
    """The shorthands over add_fault, shared by Control (in process) and RemoteControl (over HTTP)."""

    def fail_next(self, endpoint, count=1, status=500):
        self.add_fault(endpoint, "fail", count=count, status=status)

    def drop_next(self, endpoint, count=1, after_bytes=None):
        self.add_fault(endpoint, "drop", count=count, after_bytes=after_bytes)

    def slow(self, endpoint, seconds, count=None):
        self.add_fault(endpoint, "slow", count=count, seconds=seconds)


class Control(Faults):
    """Faults and records, shared by the handler threads."""

    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()
        self._faults, self._log = [], []
        self._bodies = store.root / "requests"
        shutil.rmtree(self._bodies, ignore_errors=True)  # the log covers this process only
        self._bodies.mkdir()
        self._server = None

    def add_fault(self, endpoint, action, count=1, status=500, seconds=0.0, after_bytes=None):
        """action: "fail" (answer `status`), "drop" (hang up after `after_bytes` of the body, default
        half of it) or "slow" (sleep `seconds` first); for the next `count` requests, None for all.
        endpoint "*" matches every endpoint."""
        if action not in ("fail", "drop", "slow"):
            raise ValueError(f"unknown fault action {action!r}")
        with self._lock:
            self._faults.append({"endpoint": endpoint, "action": action, "count": count, "status": status,
                                 "seconds": seconds, "after_bytes": after_bytes})

    def clear_faults(self):
        with self._lock:
            self._faults.clear()

    def take_faults(self, endpoint):
        with self._lock:
            hit = [f for f in self._faults if f["endpoint"] in (endpoint, "*") and f["count"] != 0]
            for fault in hit:
                if fault["count"] is not None:
                    fault["count"] -= 1
            self._faults = [f for f in self._faults if f["count"] != 0]
        return hit

    def record(self, entry, body):
        with self._lock:
            entry["seq"] = len(self._log) + 1
            if body:
                entry["body_file"] = str(self._bodies / f"{entry['seq']:06d}.bin")
                Path(entry["body_file"]).write_bytes(body)
            self._log.append(entry)

    def requests(self):
        """Every request so far, oldest first: seq, method, path (with query), endpoint, status (None when
        the connection was dropped), headers (all of them, Authorization included), body_size."""
        with self._lock:
            return [dict(e) for e in self._log]

    def clear_requests(self):
        with self._lock:
            self._log.clear()

    def find(self, needle):
        """Where `needle` occurs: request URLs, headers and bodies (also base64-encoded) and stored file
        contents. Hits read "request <seq> url", "request <seq> header <name>", "request <seq> body",
        "blob <sha256>"."""
        raw, hits = needle.encode(), []
        for e in self.requests():
            if needle in unquote(e["path"]):
                hits.append(f"request {e['seq']} url")
            hits += [f"request {e['seq']} header {k.lower()}" for k, v in e["headers"].items() if needle in v]
            body = Path(e["body_file"]).read_bytes() if e.get("body_file") else b""
            if raw in body or any(form in body for form in b64_forms(raw)):
                hits.append(f"request {e['seq']} body")
        for blob in sorted((self.store.root / "blobs").glob("[0-9a-f]*")):  # not a write's temp file
            if raw in blob.read_bytes():
                hits.append(f"blob {blob.name}")
        return hits

    def stop(self):
        """In-process server only: stop serving and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class RemoteControl(Faults):
    """Control's methods for a server in another process, through POST /_admin/call."""

    def __init__(self, url):
        self.url = url

    def _call(self, method, **kwargs):
        body = json.dumps({"method": method, "kwargs": kwargs}).encode()
        request = urllib.request.Request(f"{self.url}/_admin/call", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["result"]

    def add_fault(self, endpoint, action, count=1, status=500, seconds=0.0, after_bytes=None):
        self._call("add_fault", endpoint=endpoint, action=action, count=count, status=status,
                   seconds=seconds, after_bytes=after_bytes)

    def clear_faults(self):
        self._call("clear_faults")

    def requests(self):
        return self._call("requests")

    def clear_requests(self):
        self._call("clear_requests")

    def find(self, needle):
        return self._call("find", needle=needle)


class HubState:
    def __init__(self, root, tokens, orgs=(), page_size=1000, lfs_threshold=10_000_000):
        self.store = Store(root)
        self.control = Control(self.store)
        self.tokens = dict(tokens)  # token -> user name
        self.orgs = list(orgs)  # namespaces every user may write to, besides their own
        self.page_size = page_size
        self.lfs_threshold = lfs_threshold  # bytes; the Hub takes regular files up to 10 MB
        self.secret = secrets.token_bytes(16)  # signs LFS upload URLs, which carry no token

    def sign(self, sha256, size):
        return hmac.new(self.secret, f"{sha256}:{size}".encode(), "sha256").hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer has a Content-Length
    server_version = "kit-test-hub"

    def log_message(self, format, *args):  # the request log replaces the stderr chatter
        pass

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    # --- plumbing ------------------------------------------------------------------------------------

    @property
    def hub(self):
        return self.server.hub

    def send_response(self, code, message=None):
        self._logged["status"] = code  # before the client sees the answer, so the log is never behind
        super().send_response(code, message)

    def _dispatch(self):
        self.user, self._logged = None, {}
        split = urlsplit(self.path)
        self.raw_path, self.query = split.path, parse_qs(split.query)
        self.base = "http://" + self.headers.get("Host", "%s:%d" % self.server.server_address[:2])
        endpoint, handler, args = self._route([unquote(p) for p in split.path.split("/")[1:]])
        if endpoint == "admin":
            return self._admin()
        entry = self._logged = {"method": self.command, "path": self.path, "endpoint": endpoint,
                                "status": None, "headers": dict(self.headers.items()), "body_size": 0}
        try:
            faults = self.hub.control.take_faults(endpoint)
            drop = next((f for f in faults if f["action"] == "drop"), None)
            if drop:
                return self._drop(entry, drop)
            self.body = self._read_body()
            entry["body_size"] = len(self.body)
            self.hub.control.record(entry, self.body)
            time.sleep(sum(f["seconds"] for f in faults if f["action"] == "slow"))
            try:
                fail = next((f for f in faults if f["action"] == "fail"), None)
                if fail:
                    raise HubError(fail["status"], f"Injected failure ({endpoint})")
                if handler is None:
                    raise HubError(404, f"Not found: {self.command} {split.path}")
                self.user = self._authenticate()
                handler(*args)
            except HubError as e:
                self._error(e)
            except (ConnectionError, TimeoutError):
                raise
            except Exception as e:  # a bug here: answer 500 with the reason rather than hang up
                traceback.print_exc()
                self._error(HubError(500, f"test hub crashed: {e!r}"))
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client hung up, e.g. its timeout fired on a slow answer

    def _route(self, parts):
        """(endpoint name, handler or None, args); the name is what faults and the request log use."""
        method = self.command
        if parts[:2] == ["_admin", "call"]:
            return "admin", None, ()
        plain = {("GET", "api/whoami-v2"): ("whoami", self.whoami),
                 ("POST", "api/validate-yaml"): ("validate-yaml", self.validate_yaml),
                 ("POST", "api/repos/create"): ("create", self.create_repo),
                 ("DELETE", "api/repos/delete"): ("delete", self.delete_repo)}
        if (method, "/".join(parts)) in plain:
            return (*plain[method, "/".join(parts)], ())
        if len(parts) >= 4 and parts[0] == "api" and parts[1] in KINDS:
            kind, repo_id, rest = KINDS[parts[1]], f"{parts[2]}/{parts[3]}", parts[4:]
            action = rest[0] if rest else "revision"
            routes = {("GET", "revision"): self.info, ("POST", "preupload"): self.preupload,
                      ("POST", "commit"): self.commit, ("POST", "branch"): self.create_branch,
                      ("DELETE", "branch"): self.delete_branch, ("GET", "refs"): self.refs,
                      ("GET", "tree"): self.tree, ("POST", "paths-info"): self.paths_info,
                      ("GET", "commits"): self.commits}
            if action == "tree":  # tree/{rev}/{path}: the client quotes the revision into one segment
                arg = (rest[1] if len(rest) > 1 else "main", "/".join(rest[2:]))
            else:  # preupload sends its revision unquoted: keep every segment
                arg = "/".join(rest[1:]) or "main"
            name = "info" if action == "revision" else action
            return name, routes.get((method, action)), (kind, repo_id, arg)
        if parts[:1] == ["_lfs"] and len(parts) == 2 and method == "PUT":
            return "lfs-upload", self.lfs_upload, (parts[1],)
        if parts[:1] == ["_lfs"] and parts[2:] == ["verify"] and method == "POST":
            return "lfs-verify", self.lfs_verify, (parts[1],)
        kind, tail = ("dataset", parts[1:]) if parts[:1] == ["datasets"] else ("model", parts)
        if len(tail) == 6 and tail[1].endswith(".git") and tail[2:] == ["info", "lfs", "objects", "batch"]:
            handler = self.lfs_batch if method == "POST" else None
            return "lfs-batch", handler, (kind, f"{tail[0]}/{tail[1][:-4]}")
        if len(tail) >= 5 and tail[2] == "resolve":
            handler = self.resolve if method in ("GET", "HEAD") else None
            return "resolve", handler, (kind, f"{tail[0]}/{tail[1]}", tail[3], "/".join(tail[4:]))
        return "unknown", None, ()

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
                if size == 0:
                    return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _drop(self, entry, fault):
        """Read part of the body, then hang up without answering: a connection lost mid-upload."""
        length = int(self.headers.get("Content-Length") or 0)
        partial = self.rfile.read(min(fault["after_bytes"] or length // 2, length))
        entry["body_size"] = len(partial)
        self.hub.control.record(entry, partial)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, status, body=b"", content_type="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status=200, headers=None, content_type="application/json"):
        self._send(status, json.dumps(obj).encode(), content_type, headers)

    def _error(self, e):
        message = e.message.encode("ascii", "backslashreplace").decode().replace("\n", " ")
        headers = {"X-Error-Message": message, **e.headers}
        if e.code:
            headers["X-Error-Code"] = e.code
        self._json({"error": e.message, **e.fields}, status=e.status, headers=headers)

    def _admin(self):
        request = json.loads(self._read_body() or b"{}")
        if request.get("method") not in ADMIN_METHODS:
            return self._json({"error": f"unknown admin method {request.get('method')!r}"}, status=400)
        try:
            result = getattr(self.hub.control, request["method"])(**request.get("kwargs", {}))
        except (TypeError, ValueError) as e:
            return self._json({"error": str(e)}, status=400)
        self._json({"result": result})

    # --- auth and lookups ----------------------------------------------------------------------------

    def _authenticate(self):
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        user = self.hub.tokens.get(auth.removeprefix("Bearer ").strip())
        if user is None:
            # This exact message makes the client say "bad token" rather than "repo not found".
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _may_write(self, namespace):
        return self.user is not None and namespace in (self.user, *self.hub.orgs)

    def _need_user(self):
        if self.user is None:
            raise HubError(401, "You must be authenticated to do this (Authorization: Bearer <token>)")

    def _repo(self, kind, repo_id, write=False):
        valid = all(REPO_NAME.fullmatch(part) for part in repo_id.split("/"))  # also keeps paths in --root
        meta = self.hub.store.load_repo(kind, repo_id) if valid else None
        namespace = repo_id.split("/")[0]
        if meta is None or (meta["private"] and not self._may_write(namespace)):
            raise HubError(401 if self.user is None else 404, "Repository not found", "RepoNotFound")
        if write:
            self._need_user()
            if not self._may_write(namespace):
                raise HubError(403, f"You don't have the rights to write to {kind} {repo_id}")
        return meta

    def _commit(self, kind, repo_id, meta, revision):
        oid = self.hub.store.resolve(kind, repo_id, meta, revision)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.hub.store.commit(kind, repo_id, oid)

    def _repo_url(self, kind, repo_id):
        return f"{self.base}/{URL_PREFIX[kind]}{repo_id}"

    # --- endpoints -----------------------------------------------------------------------------------

    def whoami(self):
        self._need_user()
        orgs = [{"type": "org", "name": org, "fullname": org, "roleInOrg": "write"} for org in self.hub.orgs]
        token = {"displayName": "test", "role": "write"}
        self._json({"type": "user", "id": hashlib.sha1(self.user.encode()).hexdigest()[:24],
                    "name": self.user, "fullname": self.user, "email": None, "emailVerified": False,
                    "isPro": False, "orgs": orgs, "auth": {"type": "access_token", "accessToken": token}})

    def validate_yaml(self):
        content = json.loads(self.body).get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
        errors = []
        if match and yaml is not None:
            try:
                if not isinstance(yaml.safe_load(match.group(1)) or {}, dict):
                    errors.append({"message": "YAML metadata must be a mapping"})
            except yaml.YAMLError as e:
                errors.append({"message": f"Invalid YAML: {e}"})
        self._json({"errors": errors, "warnings": []}, status=400 if errors else 200)

    def create_repo(self):
        self._need_user()
        payload = json.loads(self.body)
        kind = payload.get("type") or "model"
        namespace, name = payload.get("organization") or self.user, payload.get("name", "")
        if kind not in URL_PREFIX:
            raise HubError(400, f"Repo type {kind!r} is not supported by the test hub")
        if not REPO_NAME.fullmatch(name):
            raise HubError(400, f"Invalid repo name {name!r}")
        if not self._may_write(namespace):
            raise HubError(403, f"You don't have the rights to create a repo under {namespace!r}")
        repo_id, store = f"{namespace}/{name}", self.hub.store
        with store.lock:
            if store.load_repo(kind, repo_id) is not None:
                url = self._repo_url(kind, repo_id)
                raise HubError(409, f"You already created this {kind} repo", url=url)
            files = {".gitattributes": store.file_entry(GITATTRIBUTES.encode())}
            oid = store.add_commit(kind, repo_id, [], files, "initial commit", "", "system")
            store.save_repo(kind, repo_id, {"private": payload.get("visibility") == "private",
                                            "created_at": now_iso(), "branches": {"main": oid}})
        self._json({"url": self._repo_url(kind, repo_id), "name": repo_id, "id": uuid.uuid4().hex[:24]})

    def delete_repo(self):
        self._need_user()
        payload = json.loads(self.body)
        kind = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.user}/{payload.get('name', '')}"
        with self.hub.store.lock:
            self._repo(kind, repo_id, write=True)
            self.hub.store.delete_repo(kind, repo_id)
        self._json({})

    def info(self, kind, repo_id, revision):
        meta = self._repo(kind, repo_id)
        commit = self._commit(kind, repo_id, meta, revision)
        siblings = []
        for path, f in sorted(commit["files"].items()):
            siblings.append({"rfilename": path})
            if flag(self.query.get("blobs")):
                siblings[-1].update(size=f["size"], blobId=f["oid"])
                if f["lfs"]:
                    siblings[-1]["lfs"] = {"size": f["size"], "sha256": f["sha256"],
                                           "pointerSize": f["pointer_size"]}
        info = {"_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id,
                "author": repo_id.split("/")[0], "sha": commit["id"], "private": meta["private"],
                "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                "createdAt": meta["created_at"], "lastModified": commit["date"], "siblings": siblings}
        if kind == "model":
            info["modelId"] = repo_id
        self._json(info)

    def preupload(self, kind, repo_id, revision):
        meta = self._repo(kind, repo_id, write=True)
        files = self._commit(kind, repo_id, meta, revision)["files"]
        answers = []
        for f in json.loads(self.body)["files"]:
            path, size, sample = f["path"], f["size"], base64.b64decode(f.get("sample", ""))
            lfs = size >= self.hub.lfs_threshold or path.endswith(LFS_SUFFIXES) or b"\0" in sample
            # The client compares this oid with its own (sha256 for LFS, git blob sha1 otherwise)
            # and leaves unchanged files out of the commit.
            remote = files.get(path)
            oid = (remote["sha256"] if remote["lfs"] else remote["oid"]) if remote else None
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
        self._json({"files": answers, "commitOid": meta["branches"].get(revision)})

    def lfs_batch(self, kind, repo_id):
        self._repo(kind, repo_id, write=True)
        request = json.loads(self.body)
        if request.get("operation") != "upload":
            raise HubError(422, "The test hub implements only the LFS upload operation")
        objects = []
        for obj in request["objects"]:
            sha256, size = obj["oid"], obj["size"]
            if self.hub.store.blob_size(sha256) == size:
                objects.append({"oid": sha256, "size": size})  # no actions: the bytes are here already
                continue
            query = urlencode({"size": size, "sig": self.hub.sign(sha256, size)})
            objects.append({"oid": sha256, "size": size, "authenticated": True, "actions": {
                "upload": {"href": f"{self.base}/_lfs/{sha256}?{query}", "header": {}, "expires_in": 3600},
                "verify": {"href": f"{self.base}/_lfs/{sha256}/verify", "header": {}, "expires_in": 3600}}})
        self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                   content_type="application/vnd.git-lfs+json")

    def lfs_upload(self, sha256):
        size = int(self.query.get("size", ["-1"])[0])
        if not hmac.compare_digest(self.query.get("sig", [""])[0], self.hub.sign(sha256, size)):
            raise HubError(403, "Bad or missing upload signature")
        if len(self.body) != size or hashlib.sha256(self.body).hexdigest() != sha256:
            raise HubError(400, f"Uploaded bytes do not match oid {sha256} / size {size}")
        self.hub.store.put_blob(self.body)
        self._send(200)

    def lfs_verify(self, sha256):
        self._need_user()
        size = json.loads(self.body).get("size")
        if self.hub.store.blob_size(sha256) != size:
            raise HubError(404, f"LFS object {sha256} with size {size} not found")
        self._json({"success": True})

    def commit(self, kind, repo_id, branch):
        self._repo(kind, repo_id, write=True)
        if self.query.get("create_pr"):
            raise HubError(400, "Pull requests are not supported by the test hub")
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
        except (ValueError, KeyError, StopIteration):
            raise HubError(400, "A commit body is NDJSON with a header line") from None
        store = self.hub.store
        with store.lock:
            meta = store.load_repo(kind, repo_id)
            if branch not in meta["branches"]:
                raise HubError(404, f"Invalid rev id: {branch} (commits go to a branch)", "RevisionNotFound")
            head = meta["branches"][branch]
            if header.get("parentCommit") not in (None, head):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(store.commit(kind, repo_id, head)["files"])
            for line in lines:
                key, value = line["key"], line["value"]
                path = value.get("path", "").lstrip("/")
                if key != "header" and (not path or ".." in path.split("/")):
                    raise HubError(400, f"Invalid path in {key}: {path!r}")
                if key == "file":
                    files[path] = store.file_entry(data=base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    size = store.blob_size(value["oid"])
                    if size is None or value.get("size", size) != size:
                        raise HubError(422, f"LFS object {value['oid']} for {path} was never uploaded")
                    files[path] = store.file_entry(sha256=value["oid"], size=size)
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    files = {p: f for p, f in files.items() if not p.startswith(path.rstrip("/") + "/")}
                elif key != "header":
                    raise HubError(400, f"Unknown commit operation {key!r}")
            oid = store.add_commit(kind, repo_id, [head], files, header.get("summary", ""),
                                   header.get("description", ""), self.user)
            meta["branches"][branch] = oid
            store.save_repo(kind, repo_id, meta)
        self._json({"success": True, "commitOid": oid, "hookOutput": "", "pullRequestUrl": None,
                    "commitUrl": f"{self._repo_url(kind, repo_id)}/commit/{oid}"})

    def create_branch(self, kind, repo_id, branch):
        self._repo(kind, repo_id, write=True)
        if not BRANCH_NAME.fullmatch(branch) or COMMIT_ID.fullmatch(branch) or ".." in branch:
            raise HubError(400, f"Invalid branch name {branch!r}")
        start = (json.loads(self.body or b"{}") or {}).get("startingPoint") or "main"
        store = self.hub.store
        with store.lock:
            meta = store.load_repo(kind, repo_id)
            if branch in meta["branches"]:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            meta["branches"][branch] = self._commit(kind, repo_id, meta, start)["id"]
            store.save_repo(kind, repo_id, meta)
        self._json({})

    def delete_branch(self, kind, repo_id, branch):
        self._repo(kind, repo_id, write=True)
        store = self.hub.store
        with store.lock:
            meta = store.load_repo(kind, repo_id)
            if branch == "main":
                raise HubError(403, "Cannot delete the default branch")
            if meta["branches"].pop(branch, None) is None:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            store.save_repo(kind, repo_id, meta)
        self._json({})

    def refs(self, kind, repo_id, _):
        branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                    for name, oid in self._repo(kind, repo_id)["branches"].items()]
        self._json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    @staticmethod
    def _content(files, path):
        """What a path holds in a file table: a file's oid, a folder's (path, oid) pairs, or None."""
        if path in files:
            return files[path]["oid"]
        return sorted((p, f["oid"]) for p, f in files.items() if p.startswith(path + "/")) or None

    def _entry(self, kind, repo_id, commit, path, expand):
        """The tree / paths-info entry of a file or folder in `commit`; None when it is neither."""
        content = self._content(commit["files"], path)
        if content is None:
            return None
        f = commit["files"].get(path)
        if f is None:
            entry = {"type": "directory", "oid": hashlib.sha1(repr(content).encode()).hexdigest(),
                     "size": 0, "path": path}
        else:
            entry = {"type": "file", "oid": f["oid"], "size": f["size"], "path": path}
            if f["lfs"]:
                entry["lfs"] = {"oid": f["sha256"], "size": f["size"], "pointerSize": f["pointer_size"]}
        if expand:  # lastCommit: the oldest commit of the unbroken run that holds this exact content
            last = commit
            for older in self.hub.store.history(kind, repo_id, commit["id"]):
                if self._content(older["files"], path) != content:
                    break
                last = older
            entry["lastCommit"] = {"id": last["id"], "title": last["title"], "date": last["date"]}
        return entry

    def _paged(self, items):
        """One page of `items`, with a Link header to the next page when more remain."""
        start = int(self.query.get("cursor", ["0"])[0])
        end = start + self.hub.page_size
        headers = {}
        if end < len(items):
            query = urlencode({**self.query, "cursor": [str(end)]}, doseq=True)
            headers["Link"] = f'<{self.base}{self.raw_path}?{query}>; rel="next"'
        self._json(items[start:end], headers=headers)

    def tree(self, kind, repo_id, revision_and_path):
        revision, path = revision_and_path
        commit = self._commit(kind, repo_id, self._repo(kind, repo_id), revision)
        path = path.strip("/")
        prefix = path + "/" if path else ""
        children = set()  # every folder and file below `path`, or only its direct children
        for file_path in commit["files"]:
            if file_path.startswith(prefix):
                parts = file_path[len(prefix):].split("/")
                depth = len(parts) if flag(self.query.get("recursive")) else 1
                children.update(prefix + "/".join(parts[:i]) for i in range(1, depth + 1))
        if path and not children:
            raise HubError(404, f"Folder {path!r} not found at {revision}", "EntryNotFound")
        expand = flag(self.query.get("expand"))
        entries = [self._entry(kind, repo_id, commit, p, expand) for p in children]
        self._paged(sorted(entries, key=lambda e: (e["type"] != "directory", e["path"])))

    def paths_info(self, kind, repo_id, revision):
        commit = self._commit(kind, repo_id, self._repo(kind, repo_id), revision)
        if "json" in self.headers.get("Content-Type", ""):
            form = json.loads(self.body)
            paths, expand = form.get("paths", []), bool(form.get("expand"))
        else:  # what the client posts: paths=a&paths=b&expand=false
            form = parse_qs(self.body.decode())
            paths, expand = form.get("paths", []), flag(form.get("expand"))
        entries = [self._entry(kind, repo_id, commit, p.strip("/"), expand) for p in paths]
        self._json([e for e in entries if e is not None])

    def commits(self, kind, repo_id, revision):
        head = self._commit(kind, repo_id, self._repo(kind, repo_id), revision)
        self._paged([{"id": c["id"], "title": c["title"], "message": c["message"], "date": c["date"],
                      "authors": [{"user": a, "avatar": ""} for a in c["authors"]]}
                     for c in self.hub.store.history(kind, repo_id, head["id"])])

    def resolve(self, kind, repo_id, revision, path):
        commit = self._commit(kind, repo_id, self._repo(kind, repo_id), revision)
        f = commit["files"].get(path)
        if f is None:  # X-Repo-Commit lets the client remember the miss for this commit
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit["id"]})
        headers = {"X-Repo-Commit": commit["id"], "ETag": f'"{f["sha256"] if f["lfs"] else f["oid"]}"',
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream",
                   "Content-Disposition": f'inline; filename="{quote(path.rsplit("/", 1)[-1])}"'}
        if f["lfs"]:
            headers.update({"X-Linked-Etag": f'"{f["sha256"]}"', "X-Linked-Size": str(f["size"])})
        size, start, end, status = f["size"], 0, f["size"] - 1, 200
        wanted = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if wanted and any(wanted.groups()):  # one range: a-b, a- or -suffix
            first, last = wanted.groups()
            start = int(first) if first else max(size - int(last), 0)
            end = min(int(last), size - 1) if first and last else size - 1
            if start >= size or start > end:
                raise HubError(416, f"Range {wanted.group(0)} not satisfiable for {size} bytes", None,
                               {"Content-Range": f"bytes */{size}"})
            status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{size}"
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(self.hub.store.blob_path(f["sha256"]), "rb") as blob:
            blob.seek(start)
            remaining = end - start + 1
            while remaining:
                chunk = blob.read(min(1 << 20, remaining))
                self.wfile.write(chunk)
                remaining -= len(chunk)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restart on the same root takes the same port back at once

    def __init__(self, address, hub):
        super().__init__(address, Handler)
        self.hub = hub


def start_server(root, tokens, *, host="127.0.0.1", port=0, **options):
    """Serve from a daemon thread of this process; returns (url, control). The clients still belong in
    subprocesses (they read HF_ENDPOINT when imported). options: orgs, page_size, lfs_threshold."""
    hub = HubState(root, tokens, **options)
    server = _Server((host, port), hub)
    hub.control._server = server
    threading.Thread(target=server.serve_forever, name="test-hub", daemon=True).start()
    return f"http://{host}:{server.server_address[1]}", hub.control


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="folder for repos and blobs; reused as is")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port; printed either way")
    parser.add_argument("--token", action="append", default=[], help="a valid token (repeatable)")
    parser.add_argument("--user", default="kit-user", help="the user the tokens belong to")
    parser.add_argument("--org", action="append", default=[], help="another namespace the user may write")
    parser.add_argument("--page-size", type=int, default=1000, help="tree/commits entries per page")
    parser.add_argument("--lfs-threshold", type=int, default=10_000_000, help="bytes from which LFS is used")
    args = parser.parse_args(argv)
    hub = HubState(args.root, {token: args.user for token in args.token}, orgs=args.org,
                   page_size=args.page_size, lfs_threshold=args.lfs_threshold)
    server = _Server((args.host, args.port), hub)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()


if __name__ == "__main__":
    sys.exit(main())
