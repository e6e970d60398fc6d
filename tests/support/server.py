"""A real ``upscayl-cloud serve`` in a subprocess on a free loopback port.

The e2e tests talk to it over real HTTP, share its data directory (to create
keys and inspect rows directly) and can SIGKILL it like a crashed machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from support.context import make_settings
from upscayl_cloud.services.context import Context, build_context

_BOOT = (
    "import sys; from upscayl_cloud.cli.serve import serve; "
    "serve(host='127.0.0.1', port=int(sys.argv[1]), workers=int(sys.argv[2]))"
)
_WORKER = "import sys; from upscayl_cloud.cli.serve import worker; worker(workers=int(sys.argv[1]))"
SECRET = "e2e-secret"
#: Put before a process's script by ``hold_engine``: the first engine run in
#: that process touches the ``hold_engine`` file once its input is
#: downloaded, then waits until the worker is asked to stop (SIGTERM) before
#: it starts, so that a test can interrupt a task in the middle by signal,
#: not by a race between its timer and the engine.
_HOLD = """
import time, pathlib, upscayl_cloud.engine.pipeline as _pipeline
_real, _mark = _pipeline.upscale_file, pathlib.Path({mark!r})
def _held(*args, should_cancel=None, **kw):
    if not _mark.exists():
        _mark.touch()
        while should_cancel is None or not should_cancel():
            time.sleep(0.01)
    return _real(*args, should_cancel=should_cancel, **kw)
_pipeline.upscale_file = _held
"""


def _script(code: str, hold_engine: Path | None) -> str:
    return (_HOLD.format(mark=str(hold_engine)) + code) if hold_engine else code


def wait_for(path: Path, alive: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until ``path`` exists (a held engine has started), while ``alive`` runs."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert alive.poll() is None, "the process exited before its engine started"
        assert time.monotonic() < deadline, "the engine never started"
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path, workers: int = 1, **env: object) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.env = {f"UPSCAYL_{k.upper()}": str(v) for k, v in env.items()}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.port = 0
        self._ctx: Context | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ctx(self) -> Context:
        """A context on the same data directory (the server's database and objects)."""
        if self._ctx is None:
            settings = make_settings(self.data_dir, secret_keys=SECRET, **self._typed_env())
            self._ctx = build_context(settings)
        return self._ctx

    def _typed_env(self) -> dict[str, object]:
        keep = ("credits_per_image", "max_attempts", "lease_seconds", "database_url")
        typed = {}
        for key, value in self.env.items():
            name = key[len("UPSCAYL_") :].lower()
            if name in keep or name.startswith("s3_") or name == "storage_backend":
                typed[name] = value
        return typed

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "UPSCAYL_DATA_DIR": str(self.data_dir),
            "UPSCAYL_SECRET_KEYS": SECRET,
            "UPSCAYL_ENGINE_USE_GPU": "false",
            "UPSCAYL_POLL_INTERVAL_SECONDS": "0.2",
            **self.env,
        }

    def start_worker(
        self, threads: int = 1, hold_engine: Path | None = None, **env: object
    ) -> subprocess.Popen[bytes]:
        """A separate ``upscayl-cloud worker`` process on this server's data
        (``hold_engine``: see ``_HOLD``; ``env``: more settings, by name)."""
        log = (self.data_dir.parent / f"{self.data_dir.name}-worker.log").open("ab")
        more = {f"UPSCAYL_{k.upper()}": str(v) for k, v in env.items()}
        return subprocess.Popen(
            [sys.executable, "-c", _script(_WORKER, hold_engine), str(threads)],
            env={**self._env(), **more},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, timeout: float = 60, hold_engine: Path | None = None) -> Server:
        """Serve (``hold_engine``: see ``_HOLD``; for the in-process workers)."""
        self.port = free_port()
        env = self._env()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _script(_BOOT, hold_engine), str(self.port), str(self.workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole server process group: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._ctx is not None:
            self._ctx.db.dispose()
            self._ctx = None
