"""Ctrl-C during a multipart upload: the real command, interrupted by a real SIGINT.

The command runs in a subprocess against the test server. Its signed PUTs are
slowed down (the first goes at once, each later one waits ``_SLOW`` seconds,
like a slow uplink), so that the SIGINT lands while parts are on the wire and
others are still queued.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from support.server import Server
from tests.client.helpers import (
    FAST,
    MIB,
    QUICK_POLL,
    QUICK_RETRY,
    RenamingProxy,
    big_png,
    write_image,
)
from upscayl_cloud.client import Client, UpscaleInterrupted, upload_file, upscale
from upscayl_cloud.client.uploads import state_path

_SLOW = 3.0
#: The child first takes Ctrl-C as a terminal's user would: a shell that
#: starts a job in the background (as a CI runner may start the suite) has
#: it ignore SIGINT, and Python then installs no KeyboardInterrupt handler.
_SLOW_UPLINK = f"""
import signal, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from upscayl_cloud.client.sync import Client
_real, _lock, _calls = Client.put_upload, threading.Lock(), [0]
def _slow(self, *args, **kwargs):
    with _lock:
        _calls[0] += 1
        first = _calls[0] == 1
    if not first:
        time.sleep({_SLOW})
    return _real(self, *args, **kwargs)
Client.put_upload = _slow
from upscayl_cloud.cli import app
app(prog_name="upscayl-cloud")
"""


def _recorded(source: Path) -> set[int]:
    try:
        return {int(n) for n in json.loads(state_path(source).read_text())["etags"]}
    except (OSError, ValueError, KeyError):
        return set()


def test_ctrl_c_stops_uploading_and_keeps_the_parts_for_resuming(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    source = big_png(tmp_path / "big.png", 36 * MIB)  # eight 5 MiB parts, four at a time
    env = {**os.environ, "UPSCAYL_URL": server.url, "UPSCAYL_API_KEY": api_key}
    args = ["client", "upscale", str(source), "-m", FAST, "-s", "2"]
    command = subprocess.Popen(
        [sys.executable, "-c", _SLOW_UPLINK, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _recorded(source):  # part 1 is stored; parts 2-5 are on the wire
            assert command.poll() is None, command.communicate()[0].decode()
            assert time.monotonic() < deadline, "no part was ever recorded"
            time.sleep(0.02)
        command.send_signal(signal.SIGINT)
        began = time.monotonic()
        output = command.communicate(timeout=60)[0].decode()
        elapsed = time.monotonic() - began
    finally:
        if command.poll() is None:
            command.kill()

    assert command.returncode == 130, output
    assert "interrupted" in output
    # The parts on the wire finished (one slow round); the three queued ones never
    # started, which would have taken a second round and completed the upload.
    assert elapsed < 1.6 * _SLOW, (elapsed, output)
    recorded = _recorded(source)
    assert {1} <= recorded <= {1, 2, 3, 4, 5}, recorded

    parts: list[int] = []
    with Client(server.url, api_key, poll=QUICK_POLL) as again:
        entry = upload_file(again, source, on_part=parts.append)
        assert sorted(parts) == sorted(set(range(1, 9)) - recorded)  # only the missing ones
        assert not state_path(source).exists()
        task_id = again.start_task([entry], model=FAST, scale=2)
        assert again.wait(task_id, timeout=60)["status"] == "completed"


def test_ctrl_c_in_upload_file_itself_sends_no_queued_part(
    server: Server, api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Python API called from the main thread: SIGINT lands while it waits."""
    source = big_png(tmp_path / "direct.png", 36 * MIB)  # eight parts, four at a time
    real_put = Client.put_upload
    calls: list[float] = []

    def slow_put(self: Client, *args: Any, **kwargs: Any) -> str | None:
        calls.append(time.monotonic())
        if len(calls) > 1:
            time.sleep(_SLOW / 2)
        return real_put(self, *args, **kwargs)

    monkeypatch.setattr(Client, "put_upload", slow_put)
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread().ident == main

    interrupted = threading.Event()

    def interrupt_after_first_part(number: int) -> None:
        if not interrupted.is_set():  # once: a second SIGINT would hit pytest itself
            interrupted.set()
            signal.pthread_kill(main, signal.SIGINT)

    # As in a terminal, whatever this test process inherited (see _SLOW_UPLINK).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with Client(server.url, api_key) as api, pytest.raises(KeyboardInterrupt):
            upload_file(api, source, on_part=interrupt_after_first_part)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(calls) <= 5  # part 1 and the three or four on the wire, none queued
    recorded = _recorded(source)
    assert 1 in recorded and 8 not in recorded


def test_ctrl_c_while_an_upload_waits_to_be_retried_is_prompt(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """A store answering every PUT 503 with ``Retry-After: 10`` (its disk
    full; the proxy's 503s stand in for it): Ctrl-C came while the upload,
    in its worker thread, slept before its next try, and was only obeyed
    after four more PUTs, 40 s later. A real SIGINT, to the main thread."""
    image = write_image(tmp_path / "a.png", 16, 16)
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread().ident == main
    sent = threading.Event()

    def interrupt_once_the_first_put_was_refused() -> None:
        deadline = time.monotonic() + 30
        while not proxy.puts and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # the worker is asleep before its next try
        sent.set()
        signal.pthread_kill(main, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with (
            RenamingProxy(server.url, {}, put_unavailable=True) as proxy,
            Client(proxy.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
        ):
            threading.Thread(target=interrupt_once_the_first_put_was_refused).start()
            with pytest.raises(KeyboardInterrupt) as caught:
                upscale([image], model=FAST, client=api)
            stopped = time.monotonic()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sent.is_set() and isinstance(caught.value, UpscaleInterrupted)
    assert len(proxy.puts) == 1, proxy.puts
    assert stopped - proxy.puts[0] < 3
