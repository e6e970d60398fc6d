"""redis-server processes started with chosen options (a password, a
read-only replica, a Sentinel), for the tests of a counter storage that
refuses: ``scripts/redis.sh`` starts only the plain server the session
shares (the ``redis_url`` fixture), which these must not change."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.server import free_port
from support.services import find_redis_server


def _answers(port: int) -> bool:
    """Whether a server on ``port`` answers a PING at all: ``+PONG``, or an
    error (``-NOAUTH`` from one with a password) that says it is up."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16)[:1] in (b"+", b"-")
    except OSError:
        return False


@contextlib.contextmanager
def redis_process(
    folder: Path, *options: str, port: int | None = None, sentinel_of: int | None = None
) -> Iterator[int]:
    """A redis-server on 127.0.0.1 with ``options`` added (no persistence);
    yields its port. ``sentinel_of``: a Sentinel instead, watching the
    primary on that port as ``mymaster`` (a Sentinel needs a config file it
    may rewrite). ``port``: a given one, to start a server again where it
    was. Skips where no redis-server is installed."""
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server binary: run scripts/install-test-services.sh")
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    common = ["--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder)]
    if sentinel_of is None:
        command = [binary, *common, "--save", "", "--appendonly", "no", *options]
    else:
        config = folder / "sentinel.conf"
        config.write_text(f"sentinel monitor mymaster 127.0.0.1 {sentinel_of} 1\n")
        command = [binary, str(config), "--sentinel", *common, *options]
    log = (folder / f"redis-{port}.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server {' '.join(options)} did not start", pytrace=False)
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
