"""The audit's outage for real: the SeaweedFS behind a worker is stopped while
the engine runs, so the result upload meets a dead store. The task must go
back to the queue (attempts left, credits still reserved), not fail."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from support.context import make_settings, new_principal
from support.images import png_bytes
from support.services import SEAWEEDFS_SCRIPT, ScriptService
from support.tasks import uploaded
from upscayl_cloud.db.tables import tasks
from upscayl_cloud.queue.lease import claim
from upscayl_cloud.services import keys
from upscayl_cloud.services import tasks as task_service
from upscayl_cloud.services.context import build_context
from upscayl_cloud.services.tasks import TaskOptions
from upscayl_cloud.storage.s3 import S3Storage
from upscayl_cloud.storage.s3client import make_client
from upscayl_cloud.worker import handle


def test_store_stopped_mid_task_hands_the_task_back(tmp_path: Path, weed: str) -> None:
    # A SeaweedFS of its own: stopping the session's would break other tests.
    service = ScriptService(
        SEAWEEDFS_SCRIPT,
        tmp_path / "seaweedfs",
        {"WEED": weed, "SEAWEEDFS_WATCH_PID": str(os.getpid()), "SEAWEEDFS_BUCKET": "faults"},
    )
    if (error := service.start()) is not None:
        pytest.fail(f"SeaweedFS did not start:\n{error}", pytrace=False)
    ctx = build_context(make_settings(tmp_path / "data"))
    try:
        env = service.env
        client = make_client(
            env["UPSCAYL_S3_ENDPOINT_URL"],
            env["UPSCAYL_S3_REGION"],
            env["UPSCAYL_S3_ACCESS_KEY_ID"],
            env["UPSCAYL_S3_SECRET_ACCESS_KEY"],
        )
        ctx = replace(ctx, storage=S3Storage(client, "faults"))
        principal = new_principal(ctx)[1]
        name = uploaded(ctx, principal, png_bytes(128, 128))
        options = TaskOptions(model="quick-clear-4x", scale="8")  # seconds of engine work
        task_id = task_service.start_task(ctx, principal, options, [{"fileName": name}])
        held = claim(ctx.db, "w", 30, 3)
        worker = threading.Thread(target=handle, args=(ctx, held))
        worker.start()
        deadline = time.monotonic() + 60
        with ctx.db.connect() as conn:
            while conn.execute(select(tasks.c.progress).where(tasks.c.id == task_id)).scalar() < 1:
                assert time.monotonic() < deadline and worker.is_alive(), "never got going"
                conn.rollback()
                time.sleep(0.05)
        service.stop()  # the input is downloaded: the upload will find no store
        worker.join(timeout=120)
        assert not worker.is_alive()
        with ctx.db.begin() as conn:
            row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
        assert (row.status, row.attempts, row.error) == ("pending", 1, None)
        assert keys.account_credits(ctx, principal.account_id) == 9  # still reserved
    finally:
        service.stop()
        ctx.db.dispose()
