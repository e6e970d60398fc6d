"""Graceful shutdown with real processes: SIGTERM hands a worker's task back to
the queue at once, and the API finishes the requests it is serving."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from sqlalchemy import select

from support.client import file_entry, make_client
from support.images import png_bytes
from support.server import Server, wait_for
from upscayl_cloud.db.tables import tasks


def test_sigterm_hands_a_running_task_back(tmp_path: Path) -> None:
    # A long lease: only a hand-back (not an expiry) can free the task quickly.
    server = Server(tmp_path / "data", workers=0, lease_seconds=120, engine_threads=1).start()
    # The worker's engine waits at its start until the SIGTERM: sent after
    # seeing "processing", the signal raced the engine and, on a fast
    # machine, could come after the task had completed.
    started_engine = tmp_path / "engine-started"
    worker = server.start_worker(threads=1, hold_engine=started_engine)
    replacement = None
    try:
        api = make_client(server, credits=5)
        link = api.upload("slow.png", png_bytes(128, 128))
        started = api.start([file_entry(link)], model="quick-clear-4x", scale="8")
        task_id = started.json()["data"]["taskId"]
        wait_for(started_engine, worker)
        assert api.status(task_id)["status"] == "processing"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        with server.ctx.db.begin() as conn:
            row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
        # Its attempt given back: restarts never use up a task's attempts.
        assert (row.status, row.attempts, row.lease_owner) == ("pending", 0, None)
        replacement = server.start_worker(threads=1)
        done = api.wait(task_id, timeout=120)
        assert done["status"] == "completed" and done["deductedCredits"] == 1
    finally:
        for process in (worker, replacement):
            if process is not None and process.poll() is None:
                process.kill()
        server.stop()


def test_sigterm_lets_requests_in_flight_finish(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", workers=0).start()
    try:
        api = make_client(server)
        data = png_bytes(64, 64)
        link = api.upload_url("drain.png", "image/png", len(data))
        sending = threading.Event()

        def slow_body() -> Iterator[bytes]:
            for start in range(0, len(data), len(data) // 8 + 1):
                yield data[start : start + len(data) // 8 + 1]
                sending.set()
                time.sleep(0.15)

        result: dict[str, object] = {}

        def upload() -> None:
            response = httpx.put(
                link["uploadURL"],
                content=slow_body(),
                headers={"content-type": "image/png", "content-length": str(len(data))},
                timeout=30,
            )
            result["status"] = response.status_code

        thread = threading.Thread(target=upload)
        thread.start()
        assert sending.wait(10)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        thread.join(timeout=30)
        assert result.get("status") == 200  # the upload in flight completed
        # uvicorn re-raises the signal once drained: killed by SIGTERM, or 0
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
        try:
            httpx.get(server.url + "/healthz", timeout=2)
            raise AssertionError("a stopped server still accepted a connection")
        except httpx.ConnectError:
            pass
    finally:
        server.stop()
