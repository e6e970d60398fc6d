"""A server SIGKILLed mid-task loses nothing: the lease expires, the next server
runs the task again, and it completes once with credits charged once."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from support.client import ApiClient, file_entry, make_client
from support.images import png_bytes
from support.server import Server, wait_for
from upscayl_cloud.db.tables import tasks
from upscayl_cloud.services.keys import account_credits, authenticate


def test_killed_worker_task_completes_once_and_charges_once(
    tmp_path: Path, database_url: str
) -> None:
    """On SQLite and, where available, PostgreSQL (``database_url`` fixture)."""
    data_dir = tmp_path / "data"
    env = {"lease_seconds": 2, "engine_threads": 2, "database_url": database_url}
    # The first server's engine waits at its start (until killed): a kill
    # sent on seeing "processing" raced the engine, which could finish first.
    started_engine = tmp_path / "engine-started"
    first = Server(data_dir, workers=1, **env).start(hold_engine=started_engine)
    try:
        api = make_client(first, credits=5)
        key = api.http.headers["X-API-Key"]
        account = authenticate(first.ctx, api.http.headers["X-API-Key"]).account_id
        # 8x: two network passes, for the second server to run in full.
        link = api.upload("slow.png", png_bytes(128, 128))
        started = api.start([file_entry(link)], model="quick-clear-4x", scale="8")
        task_id = started.json()["data"]["taskId"]
        assert first.process is not None
        wait_for(started_engine, first.process)
        # What an attempt killed while uploading its results leaves behind
        # (the held engine never gets that far): the next attempt removes it.
        leftover = f"results/{account}/{task_id}/1/0.png"
        first.ctx.storage.write_stream(leftover, iter([b"partial"]), 100)
        first.kill()
        with first.ctx.db.begin() as conn:
            row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
        assert (row.status, row.attempts) == ("processing", 1)  # killed mid-task
        assert account_credits(first.ctx, account) == 4  # reserved, not captured
    finally:
        first.stop()

    second = Server(data_dir, workers=1, **env).start()
    try:
        api = ApiClient(second.url, key)
        done = api.wait(task_id, timeout=180)
        assert done["status"] == "completed", done
        assert (done["creditsDeducted"], done["deductedCredits"]) == (True, 1)
        assert len(done["files"]) == 1 and done["files"][0]["dimensions"]["width"] == 1024
        with second.ctx.db.begin() as conn:
            row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
        assert (row.attempts, row.credits_charged) == (2, 1)
        assert account_credits(second.ctx, account) == 4
        objects = second.data_dir / "objects"
        attempts = sorted(p.name for p in (objects / "results" / account / task_id).iterdir())
        assert attempts == ["2"]  # the dead attempt's leftovers are gone
    finally:
        second.stop()
