"""Real ``serve`` and ``worker`` processes: one whose store is not the
database's stops at start with one line, before claiming anything; the
embedded default pairs its folder at its first start and starts again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select, text

from support.context import new_principal
from support.server import Server
from support.stacks import stack_env
from support.tasks import queued_task
from upscayl_cloud.db.tables import tasks

#: The marker's key, as deployment.md names it to operators.
MARKER_KEY = "upscayl-cloud-store-id"


def _refused_worker(api: Server, folder: Path, **env: object) -> str:
    """Start a worker on ``api``'s database with its own data folder (and
    ``env``); return its output once it has exited 1."""
    worker = api.start_worker(1, data_dir=folder, **env)
    try:
        code = worker.wait(timeout=90)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        pytest.fail("the worker on another store kept running")
    log = (api.data_dir.parent / f"{api.data_dir.name}-worker.log").read_text()
    assert code == 1, log
    return log


def _pending(api: Server, task_id: str) -> tuple[str, int]:
    with api.ctx.db.begin() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
    return row.status, row.attempts


def test_a_worker_without_the_s3_settings_stops_before_claiming(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The reviewer's case: API on PostgreSQL and SeaweedFS, a worker on the
    same PostgreSQL whose machine lacks UPSCAYL_STORAGE_BACKEND=s3. It used
    to fail every task it claimed, in under a second each."""
    env = stack_env(request, "scaleout")
    api = Server(tmp_path / "api", workers=0, create_first_key="false", **env).start()
    try:
        task_id = queued_task(api.ctx, new_principal(api.ctx)[1])
        folder = tmp_path / "worker"
        log = _refused_worker(api, folder, storage_backend="local")
        # (The harness calls the command's function: typer.Exit's traceback follows.)
        (line,) = [line for line in log.splitlines() if line.startswith("Cannot start:")]
        assert line.startswith(
            "Cannot start: this process's object store is not the one the other processes"
        ), log
        assert f"local folder {folder.resolve() / 'objects'} has no marker" in line
        assert f"The database's store is s3 bucket {env['s3_bucket']} at " in line
        assert str(env["s3_secret_access_key"]) not in log
        assert _pending(api, task_id) == ("pending", 0)
        assert api.ctx.storage.size(MARKER_KEY) == 32  # the API's start paired its bucket
    finally:
        api.stop()


def test_the_embedded_default_pairs_its_folder_and_a_worker_elsewhere_stops(
    tmp_path: Path,
) -> None:
    """``serve`` with nothing configured starts, twice, as before; a worker
    pointed at its database file from another folder stops."""
    data = tmp_path / "data"
    first = Server(data, workers=1).start()
    first.stop()
    again = Server(data, workers=0).start()  # no worker of its own: the task waits
    try:
        with again.ctx.db.begin() as conn:
            store_id = conn.execute(text("SELECT store_id FROM store_identity")).scalar_one()
        assert (data / "objects" / MARKER_KEY).read_text() == store_id
        task_id = queued_task(again.ctx, new_principal(again.ctx)[1])
        log = _refused_worker(
            again, tmp_path / "worker", database_url=f"sqlite:///{data.resolve()}/upscayl.db"
        )
        assert "Cannot start: this process's object store is not the one" in log
        assert _pending(again, task_id) == ("pending", 0)
    finally:
        again.stop()
