"""The audit's outage for real: the SeaweedFS behind a worker is stopped after
the input is downloaded, so the result upload meets a dead store. The task
must go back to the queue (attempts left, credits still reserved), not fail.

The store is stopped from inside the worker's first result upload, not by a
timer racing the engine: on a fast machine the engine finished before a timed
stop landed, and the task completed instead (CI, session 5). The outage itself
is real: the upload then talks to a closed port."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from botocore.client import BaseClient
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


class StoreStoppedBeforeTheFirstResult(S3Storage):
    """An S3 store whose service is stopped just before the first result upload."""

    def __init__(self, stop: Callable[[], None], client: BaseClient, bucket: str) -> None:
        super().__init__(client, bucket)
        self._stop = stop
        self.stopped = False

    def put_file(self, key: str, source: Path) -> int:
        if not self.stopped:
            self.stopped = True
            self._stop()
        return super().put_file(key, source)


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
        storage = StoreStoppedBeforeTheFirstResult(service.stop, client, "faults")
        ctx = replace(ctx, storage=storage)
        principal = new_principal(ctx)[1]
        name = uploaded(ctx, principal, png_bytes(32, 32))
        options = TaskOptions(model="quick-clear-4x", scale="4")
        task_id = task_service.start_task(ctx, principal, options, [{"fileName": name}])
        handle(ctx, claim(ctx.db, "w", 30, 3))
        assert storage.stopped  # the engine ran, and the store went away after it
        with ctx.db.begin() as conn:
            row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
        assert (row.status, row.attempts, row.error) == ("pending", 1, None)
        assert keys.account_credits(ctx, principal.account_id) == 9  # still reserved
    finally:
        service.stop()
        ctx.db.dispose()
