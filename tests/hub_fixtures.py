"""The `hub` fixture: the local Hub look-alike (tests/hub_server.py) in a subprocess for the session.

Hub tests run their clients - stage CLIs or a short `python -c` - as subprocesses with `hub.env`, which
points HF_ENDPOINT at the server, carries the test token and turns offline mode off for that child only
(the pytest process itself stays offline, see conftest.py):

    def test_label_pushes_its_config(hub, tmp_path):
        hub.run([sys.executable, "stages/label_questions.py", ..., "--hub-repo", f"{hub.user}/run-questions"], check=True)
        names = "import sys, datasets; print(datasets.get_dataset_config_names(sys.argv[1]))"
        assert "iter01-labeled" in hub.python(names, f"{hub.user}/run-questions").stdout

Faults (hub.fail_next / drop_next / slow), the request log (hub.requests()) and the needle search
(hub.find(hub.token)) are hub_server.py's Control methods; a fault a test leaves armed is cleared after it.
"""
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from hub_server import RemoteControl

SERVER = Path(__file__).with_name("hub_server.py")
ROOT = SERVER.parents[1]


class HubProcess(RemoteControl):
    """hub_server.py in a subprocess on a store folder; `env` is what a client subprocess needs."""

    def __init__(self, root, home, user="kit-user", page_size=1000):
        super().__init__(url=None)
        self.root, self.home, self.user, self.page_size = Path(root), Path(home), user, page_size
        self.token = "hf_test_" + secrets.token_hex(12)  # new each session, so a leak check can look for it
        self.port, self.process, self.env = 0, None, None

    def start(self):
        log_path = self.root.parent / f"{self.root.name}-server.log"  # the server's tracebacks, if any
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(SERVER), "--root", str(self.root), "--port", str(self.port),
                 "--token", self.token, "--user", self.user, "--page-size", str(self.page_size)],
                stdout=subprocess.PIPE, stderr=log, text=True)
        line = self.process.stdout.readline()  # the server prints its port once it listens
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"hub_server.py did not start, see {log_path}")
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = self._client_env()
        return self

    def stop(self):
        if self.process is not None:
            self.process.terminate()  # this pid only; the server writes atomically, so SIGTERM is safe
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process.stdout.close()
            self.process = None

    def restart(self):
        """Stop, then start on the same store folder and port: url and env stay valid."""
        self.stop()
        return self.start()

    def _client_env(self):
        env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN_PATH", "HUGGING_FACE_HUB_TOKEN")}
        no_proxy = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"]))
        env.update({
            "HF_ENDPOINT": self.url,  # huggingface_hub and datasets read it when imported
            "HF_TOKEN": self.token,
            "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1",  # the LFS/HTTP transfer path, which the server implements
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_UPDATE_DOWNLOAD_COUNTS": "0",  # or load_dataset pings s3.amazonaws.com
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
            "HF_HOME": str(self.home),  # token file and caches: never ~/.cache
            "HF_HUB_CACHE": str(self.home / "hub"), "HF_DATASETS_CACHE": str(self.home / "datasets"),
            "NO_PROXY": no_proxy, "no_proxy": no_proxy,  # a proxy set in the shell must not see this traffic
        })
        return env

    def run(self, args, env=None, timeout=600, check=False, **kwargs):
        """subprocess.run(args) in the repository root with hub.env (updated with `env`), text output."""
        proc = subprocess.run(args, env={**self.env, **(env or {})}, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout, **kwargs)
        if check and proc.returncode != 0:
            command = " ".join(map(str, args))[:300]
            raise AssertionError(f"{command} exited {proc.returncode}\n--- stderr ---\n{proc.stderr[-6000:]}")
        return proc

    def python(self, code, *args, env=None, timeout=600, check=True):
        """`python -c code *args` as a Hub client; a non-zero exit fails the test with its stderr."""
        return self.run([sys.executable, "-c", code, *map(str, args)], env=env, timeout=timeout, check=check)


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    # Small pages, so every listing in the tests walks the Link-header pagination of the clients.
    server = HubProcess(root=tmp_path_factory.mktemp("hub-store"), home=tmp_path_factory.mktemp("hf-home"),
                        page_size=5)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _hub_faults_cleared(request):
    """A fault that a failing test left armed must not hit the next test."""
    yield
    if "hub" in request.fixturenames:
        request.getfixturevalue("hub").clear_faults()
