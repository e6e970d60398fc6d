"""A database and its object store share an id, checked at every start of
``serve`` and ``worker``: a process on another store is refused before it
can fail every file it claims (real databases, real folders and buckets)."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from sqlalchemy import delete, select, update

from support.context import make_settings, new_principal
from support.postgres import Postgres
from support.tasks import queued_task
from tests.storage.unreachable import closed_endpoint
from upscayl_cloud.config import Settings, StorageBackend
from upscayl_cloud.db.engine import make_engine, now_ms
from upscayl_cloud.db.tables import store_identity, task_files, uploads
from upscayl_cloud.services import context as context_module
from upscayl_cloud.services import pairing
from upscayl_cloud.services.context import Context, build_context
from upscayl_cloud.services.pairing import (
    MARKER_KEY,
    StoreMismatchError,
    check_store_pairing,
    read_marker,
    write_marker,
)
from upscayl_cloud.services.sweeper import sweep
from upscayl_cloud.storage import build_storage
from upscayl_cloud.storage.base import StorageError, StorageUnavailableError
from upscayl_cloud.storage.s3 import S3Storage
from upscayl_cloud.storage.s3client import make_client


def _shared(settings: Settings) -> Settings:
    """``settings`` with its database named outright, so that a process with
    another data folder (hence another local store) shares it."""
    if settings.database_url:
        return settings
    return settings.model_copy(update={"database_url": settings.resolved_database_url})


def _elsewhere(settings: Settings, folder: Path) -> Settings:
    """A process on the same database whose store is a local folder of its
    own: a machine without the others' storage settings."""
    return settings.model_copy(
        update={"data_dir": folder, "storage_backend": StorageBackend.local, "storage_dir": None}
    )


def _start(settings: Settings) -> Context:
    """What ``serve`` and ``worker`` build at start."""
    return build_context(settings, records_secret=True, checks_store=True)


def _row(ctx: Context) -> tuple[str, str, str | None]:
    with ctx.db.begin() as conn:
        row = conn.execute(select(store_identity)).one()
    return row.store_id, row.location, row.endpoint


def _restored_from_before_its_pairing(settings: Settings) -> tuple[Context, str]:
    """A paired deployment with a task, whose database then loses its
    pairing (restored from a backup made before it): its context, and the
    id its store holds."""
    ctx = _start(_shared(settings))
    try:
        queued_task(ctx, new_principal(ctx)[1])
        store_id = _row(ctx)[0]
        with ctx.db.begin() as conn:
            conn.execute(delete(store_identity))
    except BaseException:
        ctx.db.dispose()
        raise
    return ctx, store_id


def _paired_at(ctx: Context) -> int | None:
    with ctx.db.begin() as conn:
        return conn.execute(select(store_identity.c.paired_at)).scalar_one()


@pytest.fixture
def api(settings: Settings) -> Iterator[Context]:
    """The first process of a deployment, paired with its local folder."""
    ctx = _start(_shared(settings))
    yield ctx
    ctx.db.dispose()


@pytest.fixture
def s3_settings(tmp_path: Path, postgres_server: Postgres, seaweedfs: dict[str, str]) -> Settings:
    """PostgreSQL and a fresh bucket of the session's SeaweedFS."""
    values: dict[str, object] = {
        **{k.removeprefix("UPSCAYL_").lower(): v for k, v in seaweedfs.items()},
        "database_url": postgres_server.new_database(),
        "storage_backend": "s3",
        "s3_bucket": f"pair-{uuid.uuid4().hex[:12]}",
        "s3_create_bucket": True,
    }
    return make_settings(tmp_path / "api", **values)


def test_the_first_start_pairs_and_every_later_start_agrees(api: Context) -> None:
    store_id, location, endpoint = _row(api)
    assert read_marker(api.storage) == store_id and len(store_id) == 32
    assert (location, endpoint) == (f"local folder {api.settings.resolved_storage_dir}", None)
    again = _start(api.settings)
    try:
        assert _row(again) == (store_id, location, endpoint)
    finally:
        again.db.dispose()


def test_a_process_with_another_local_folder_is_refused(api: Context, tmp_path: Path) -> None:
    """Nothing uploaded yet: the folders' names tell them apart."""
    paired = _row(api)
    other = _elsewhere(api.settings, tmp_path / "worker")
    with pytest.raises(StoreMismatchError) as refused:
        _start(other)
    message = str(refused.value)
    assert f"local folder {other.resolved_storage_dir} has no marker" in message
    assert f"The database's store is local folder {api.settings.resolved_storage_dir}." in message
    assert "UPSCAYL_STORAGE_BACKEND" in message and "\n" not in message
    assert read_marker(build_storage(other)) is None  # nothing written there
    assert _row(api) == paired


def test_a_store_without_the_databases_files_is_refused_and_the_remedy_works(
    api: Context, tmp_path: Path
) -> None:
    """The deployment has files: a store holding none of them and no marker
    is not its store, whatever its name. The line says how to pair it when
    it is the right one after all (its objects lost), and that works."""
    queued_task(api, new_principal(api)[1])
    other = _elsewhere(api.settings, tmp_path / "worker")
    with pytest.raises(StoreMismatchError) as refused:
        _start(other)
    store_id = _row(api)[0]
    assert "has no marker (upscayl-cloud-store-id) and none of the database's 1 newest" in str(
        refused.value
    )
    assert str(refused.value).endswith(f"put an object {MARKER_KEY} holding {store_id} in it.")
    folder = other.resolved_storage_dir
    (folder / MARKER_KEY).write_text(f"{store_id}\n")  # as `echo ID > KEY` writes it
    _start(other).db.dispose()


def test_a_store_holding_another_databases_marker_is_refused(api: Context, tmp_path: Path) -> None:
    """A bucket shared by two deployments: a database of its own with files
    of its own, none of them in the store, which has the other's marker.
    Nothing is recorded in that database, and the store is left as it was."""
    lone = build_context(
        make_settings(tmp_path / "lone", storage_dir=tmp_path / "lone-objects")
    )  # its file in a folder of its own
    try:
        queued_task(lone, new_principal(lone)[1])
        on_ours = lone.settings.model_copy(
            update={"storage_dir": api.settings.resolved_storage_dir}
        )
        with pytest.raises(StoreMismatchError) as refused:
            _start(on_ours)
        message = str(refused.value)
        assert f"holds the marker of another database ({MARKER_KEY}: '{_row(api)[0]}')" in message
        assert "and none of this database's 1 newest files" in message
        assert "The database had no store paired with it yet (a new database" in message
        assert f"delete {MARKER_KEY} from it" in message
        assert read_marker(api.storage) == _row(api)[0]  # left as it was
        with lone.db.begin() as conn:
            assert conn.execute(select(store_identity)).all() == []
    finally:
        lone.db.dispose()


def test_a_fresh_database_beside_a_paired_store_takes_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``rm data/upscayl.db`` to start over keeps ``objects/`` and its
    marker: the new database lists no files, so it takes the store's id
    rather than being refused for good with no remedy."""
    data = tmp_path / "data"
    first = _start(make_settings(data))
    store_id = _row(first)[0]
    first.db.dispose()
    (data / "upscayl.db").unlink()
    monkeypatch.setattr(context_module, "_migrated", set())  # a new process: migrate again
    again = _start(make_settings(data))
    try:
        assert _row(again)[0] == store_id == read_marker(again.storage)
        assert _paired_at(again) is not None
    finally:
        again.db.dispose()


def test_starts_racing_on_a_new_database_and_store_agree(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four processes at once, each with its own connections and store
    client, lined up twice: after every one of them has read the marker
    (none there yet), and before the row's insert. All start; one id."""
    shared = _shared(settings)
    build_context(shared).db.dispose()  # migrated, nothing paired
    racers = 4
    inserting = threading.Barrier(racers, timeout=60)
    have_read = threading.Barrier(racers, timeout=60)
    real_row, real_read = pairing._insert_row, pairing.read_marker

    def row_together(*args: Any, **kwargs: Any) -> Any:
        inserting.wait()
        return real_row(*args, **kwargs)

    def read_together(*args: Any) -> Any:
        found = real_read(*args)
        have_read.wait()
        return found

    monkeypatch.setattr(pairing, "_insert_row", row_together)
    monkeypatch.setattr(pairing, "read_marker", read_together)
    ids: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        db = make_engine(shared.resolved_database_url)
        try:
            ids.append(check_store_pairing(db, build_storage(shared), shared))
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=start) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and len(ids) == racers and len(set(ids)) == 1
    monkeypatch.undo()
    ctx = _start(shared)
    try:
        assert _row(ctx)[0] == ids[0] == read_marker(ctx.storage)
    finally:
        ctx.db.dispose()


def _unpaired_deployment(settings: Settings) -> Context:
    """A deployment from before the pairing: files in its store, no row, no
    marker."""
    ctx = build_context(_shared(settings))
    queued_task(ctx, new_principal(ctx)[1])
    assert read_marker(ctx.storage) is None
    with ctx.db.begin() as conn:
        assert conn.execute(select(store_identity)).all() == []
    return ctx


def test_an_existing_deployment_is_paired_at_its_first_start(
    settings: Settings, tmp_path: Path
) -> None:
    ctx = _unpaired_deployment(settings)
    try:
        _start(ctx.settings).db.dispose()
        assert read_marker(ctx.storage) == _row(ctx)[0]
        with pytest.raises(StoreMismatchError):  # and a stranger is refused from then on
            _start(_elsewhere(ctx.settings, tmp_path / "worker"))
    finally:
        ctx.db.dispose()


def test_a_misconfigured_first_start_after_the_upgrade_pairs_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    """The first process after the upgrade is the one on the wrong store: it
    makes the row but is refused, and the right ones pair after it."""
    ctx = _unpaired_deployment(settings)
    try:
        wrong = _elsewhere(ctx.settings, tmp_path / "worker")
        with pytest.raises(StoreMismatchError) as refused:
            _start(wrong)
        assert "none of the database's 1 newest files" in str(refused.value)
        assert "The database had no store paired with it yet" in str(refused.value)
        assert read_marker(build_storage(wrong)) is None
        _start(ctx.settings).db.dispose()
        assert read_marker(ctx.storage) == _row(ctx)[0]
        assert _row(ctx)[1] == f"local folder {ctx.settings.resolved_storage_dir}"
        with pytest.raises(StoreMismatchError):
            _start(wrong)
    finally:
        ctx.db.dispose()


@pytest.mark.parametrize("evidence", ["upload", "result"])
def test_a_folder_moved_without_its_marker_is_known_by_its_files(
    settings: Settings, tmp_path: Path, evidence: str
) -> None:
    """The marker lost and the folder renamed: by name it is another store,
    but it holds the database's newest files, the task's original or (that
    one gone) its result. The marker is written back."""
    ctx = _start(_shared(settings))
    try:
        task_id = queued_task(ctx, new_principal(ctx)[1])
        if evidence == "result":
            _deliver(ctx, task_id)
        store_id = _row(ctx)[0]
        ctx.storage.delete(MARKER_KEY)
        moved = tmp_path / "moved"
        ctx.settings.resolved_storage_dir.rename(moved)
        elsewhere = ctx.settings.model_copy(update={"storage_dir": moved})
        again = _start(elsewhere)
        try:
            assert read_marker(again.storage) == store_id == _row(ctx)[0]
            assert _row(ctx)[1] == f"local folder {moved}"
        finally:
            again.db.dispose()
    finally:
        ctx.db.dispose()


def _deliver(ctx: Context, task_id: str) -> None:
    """The task's file as a worker leaves it: a result stored and recorded;
    and its original deleted, so that only the result tells."""
    with ctx.db.begin() as conn:
        source = conn.execute(
            select(task_files.c.source_key).where(task_files.c.task_id == task_id)
        ).scalar_one()
    result_key = f"results/{task_id}/0.png"
    ctx.storage.write_stream(result_key, iter([b"png"]), 16)
    ctx.storage.delete(source)
    now = now_ms()
    with ctx.db.begin() as conn:
        conn.execute(
            update(task_files)
            .where(task_files.c.task_id == task_id)
            .values(status="completed", result_key=result_key, expires_at=now + 60_000)
        )
        conn.execute(update(uploads).where(uploads.c.storage_key == source).values(deleted_at=now))


def test_a_database_restored_from_before_the_pairing_takes_the_stores_id(
    settings: Settings,
) -> None:
    """Its row is missing, the store beside it holds its files and the
    pairing's marker: the store's id is the database's again."""
    ctx, store_id = _restored_from_before_its_pairing(settings)
    try:
        _start(ctx.settings).db.dispose()
        assert _row(ctx)[0] == store_id == read_marker(ctx.storage)
    finally:
        ctx.db.dispose()


def test_a_restored_database_whose_first_start_met_an_outage_takes_the_id_next_time(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restored from a backup made before the pairing, and started before
    its store answers (compose, systemd): that start fails as an outage and
    leaves no row of its own, so the next one takes the store's id. It used
    to commit a new id first and refuse the right store from then on.
    (A stand-in for the outage: one read of the marker fails as the real
    store's does when it is down; ``test_a_store_down_at_start...`` is the
    real one, which has no marker to restore to.)"""
    ctx, store_id = _restored_from_before_its_pairing(settings)
    try:
        real_read = pairing.read_marker

        def down(storage: Any) -> str | None:
            monkeypatch.setattr(pairing, "read_marker", real_read)
            raise StorageUnavailableError(f"{MARKER_KEY}: store unavailable: connection refused")

        monkeypatch.setattr(pairing, "read_marker", down)
        with pytest.raises(StorageUnavailableError):
            _start(ctx.settings)
        with ctx.db.begin() as conn:
            assert conn.execute(select(store_identity)).all() == []
        _start(ctx.settings).db.dispose()
        assert _row(ctx)[0] == store_id == read_marker(ctx.storage)
    finally:
        ctx.db.dispose()


def test_processes_starting_together_on_a_restored_database_take_the_stores_id(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes of a database restored from before its pairing, lined
    up after reading the store's marker: neither reads the other's new id
    and takes it for the database's. Both start, with the store's id."""
    ctx, store_id = _restored_from_before_its_pairing(settings)
    try:
        have_read = threading.Barrier(2, timeout=60)
        real_read = pairing.read_marker

        def read_together(storage: Any) -> str | None:
            found = real_read(storage)
            have_read.wait()
            return found

        monkeypatch.setattr(pairing, "read_marker", read_together)
        ids: list[str] = []
        errors: list[BaseException] = []

        def start() -> None:
            db = make_engine(ctx.settings.resolved_database_url)
            try:
                ids.append(check_store_pairing(db, build_storage(ctx.settings), ctx.settings))
            except BaseException as exc:
                errors.append(exc)
                have_read.abort()  # the other is not left waiting
            finally:
                db.dispose()

        threads = [threading.Thread(target=start) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == [] and ids == [store_id, store_id]
        assert _row(ctx)[0] == store_id == read_marker(ctx.storage)
    finally:
        ctx.db.dispose()


def test_files_expired_while_stopped_and_removed_by_lifecycle_rules_refuse_nothing(
    settings: Settings,
) -> None:
    """An existing deployment's first start after the upgrade, after a stop
    longer than the bucket's lifecycle rules (uploads/ 2 days, results/ 8):
    its rows expired but not swept yet, their objects gone. Those rows say
    nothing about the store; with none unexpired it is paired by name."""
    ctx = _unpaired_deployment(settings)
    try:
        _deliver(ctx, queued_task(ctx, new_principal(ctx)[1]))
        past = now_ms() - 10 * 86_400_000
        with ctx.db.begin() as conn:
            conn.execute(update(task_files).values(status="completed", expires_at=past))
            conn.execute(update(uploads).values(expires_at=past))
            keys = list(conn.execute(select(uploads.c.storage_key)).scalars())
            keys += [
                k for k in conn.execute(select(task_files.c.result_key)).scalars() if k is not None
            ]
        assert any(key.startswith("results/") for key in keys)
        for key in keys:  # as the lifecycle rules remove them
            ctx.storage.delete(key)
        _start(ctx.settings).db.dispose()
        assert pairing.newest_object_keys(ctx.db) == []
        assert read_marker(ctx.storage) == _row(ctx)[0]
    finally:
        ctx.db.dispose()


def test_an_empty_folder_at_the_paired_folders_place_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    """A shared folder not mounted on one machine leaves an empty folder of
    the same name, and an idle database lists no file to look for: once the
    id has been in the store, the name alone no longer pairs. The line does
    not call that folder the database's store."""
    ctx = _start(_shared(settings))
    try:
        folder = ctx.settings.resolved_storage_dir
        folder.rename(tmp_path / "the-share")
        folder.mkdir()  # the mount point, nothing mounted on it
        with pytest.raises(StoreMismatchError) as refused:
            _start(ctx.settings)
        message = str(refused.value)
        assert f"local folder {folder} has no marker" in message
        assert "the database lists no unexpired files to look for in it" in message
        assert f"The database's store is local folder {folder}" not in message
        assert "known by this same name" in message
        assert message.endswith(f"holding {_row(ctx)[0]} in it.")
        assert read_marker(ctx.storage) is None  # nothing written there
    finally:
        ctx.db.dispose()


def test_a_first_start_cut_short_before_the_marker_is_finished_by_the_next(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row made, the process gone before it wrote the marker (a
    stand-in: the write fails, as a killed process never makes it): the
    next start at the same store writes it, the database listing no files."""
    shared = _shared(settings)
    build_context(shared).db.dispose()

    def killed(storage: Any, store_id: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pairing, "write_marker", killed)
    with pytest.raises(KeyboardInterrupt):
        _start(shared)
    monkeypatch.undo()
    ctx = _start(shared)
    try:
        assert read_marker(ctx.storage) == _row(ctx)[0]
        assert _paired_at(ctx) is not None
    finally:
        ctx.db.dispose()


def test_keys_without_list_bucket_get_a_hint_with_the_stores_403(tmp_path: Path) -> None:
    """AWS answers a missing object with 403 when the keys may not list the
    bucket: the first start, reading the marker, and the files' HEADs then
    fail, still (a 403 may be a real refusal), but the line says what to
    grant. A stand-in for AWS's answers: botocore's Stubber on a real
    client, since SeaweedFS answers 404 whatever the keys may list."""
    ctx = build_context(make_settings(tmp_path / "data"))  # a file listed
    try:
        queued_task(ctx, new_principal(ctx)[1])
        client = make_client("http://127.0.0.1:9", "us-east-1", "key", "secret")
        store = S3Storage(client, "photos")
        s3 = ctx.settings.model_copy(
            update={"storage_backend": StorageBackend.s3, "s3_bucket": "photos"}
        )
        marker = b"0123456789abcdef0123456789abcdef"
        with Stubber(client) as stub:
            stub.add_client_error(
                "get_object", service_error_code="AccessDenied", http_status_code=403
            )
            stub.add_response(
                "get_object", {"Body": StreamingBody(io.BytesIO(marker), len(marker))}
            )
            stub.add_client_error("head_object", service_error_code="403", http_status_code=403)
            for says in ("S3 error AccessDenied", "S3 error 403"):
                with pytest.raises(StorageError) as denied:
                    check_store_pairing(ctx.db, store, s3)
                assert not isinstance(denied.value, StorageUnavailableError)
                assert says in str(denied.value)
                assert "without s3:ListBucket on the bucket, S3 answers 403" in str(denied.value)
                assert "\n" not in str(denied.value) and "secret" not in str(denied.value)
            stub.assert_no_pending_responses()
    finally:
        ctx.db.dispose()


def test_the_sweeper_and_the_local_clean_up_leave_the_marker(api: Context) -> None:
    """It sits outside every prefix the service deletes under."""
    assert "/" not in MARKER_KEY and not MARKER_KEY.startswith(".")
    store_id = _row(api)[0]
    sweep(api)
    api.storage.reclaim_leftovers(time.time() + 3600)  # type: ignore[attr-defined]
    assert read_marker(api.storage) == store_id


def test_only_the_services_own_processes_check(settings: Settings) -> None:
    """``keys`` commands and the tests' contexts neither pair nor read the store."""
    ctx = build_context(settings, records_secret=True)
    try:
        assert read_marker(ctx.storage) is None
        with ctx.db.begin() as conn:
            assert conn.execute(select(store_identity)).all() == []
    finally:
        ctx.db.dispose()


def test_a_marker_written_by_hand_with_a_newline_counts(api: Context) -> None:
    store_id = _row(api)[0]
    write_marker(api.storage, f"{store_id}\n")
    assert read_marker(api.storage) == store_id
    _start(api.settings).db.dispose()


# -- on PostgreSQL and S3, as the reviewer's deployment ------------------------------------


def test_a_worker_without_the_s3_settings_is_refused(s3_settings: Settings, tmp_path: Path) -> None:
    """The reviewer's case: the API on PostgreSQL and a bucket, a worker on
    the same PostgreSQL whose machine lacks UPSCAYL_STORAGE_BACKEND=s3."""
    api = _start(s3_settings)
    try:
        queued_task(api, new_principal(api)[1])
        worker = _elsewhere(s3_settings, tmp_path / "worker")
        with pytest.raises(StoreMismatchError) as refused:
            _start(worker)
        message = str(refused.value)
        assert f"local folder {worker.resolved_storage_dir} has no marker" in message
        endpoint = s3_settings.s3_endpoint_url.rstrip("/")
        assert f"store is s3 bucket {s3_settings.s3_bucket} at {endpoint}." in message
        assert s3_settings.s3_secret_access_key.get_secret_value() not in message
    finally:
        api.db.dispose()


def test_another_bucket_of_the_same_store_is_refused(s3_settings: Settings) -> None:
    api = _start(s3_settings)
    try:
        other = s3_settings.model_copy(update={"s3_bucket": f"{s3_settings.s3_bucket}-b"})
        with pytest.raises(StoreMismatchError, match=f"s3 bucket {other.s3_bucket} at "):
            _start(other)
    finally:
        api.db.dispose()


def test_s3_starts_racing_agree(s3_settings: Settings) -> None:
    build_context(s3_settings).db.dispose()
    ids: list[str] = []

    def start() -> None:
        db = make_engine(s3_settings.resolved_database_url)
        try:
            ids.append(check_store_pairing(db, build_storage(s3_settings), s3_settings))
        finally:
            db.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(ids) == 4 and len(set(ids)) == 1
    assert read_marker(build_storage(s3_settings)) == ids[0]


def test_an_existing_s3_deployment_is_paired_and_a_lost_marker_written_back(
    s3_settings: Settings,
) -> None:
    ctx = _unpaired_deployment(s3_settings)
    try:
        _start(s3_settings).db.dispose()
        store_id = _row(ctx)[0]
        assert read_marker(ctx.storage) == store_id
        ctx.storage.delete(MARKER_KEY)
        _start(s3_settings).db.dispose()
        assert read_marker(ctx.storage) == store_id
    finally:
        ctx.db.dispose()


def test_a_store_down_at_start_is_an_outage_not_a_mismatch(tmp_path: Path) -> None:
    down = make_settings(
        tmp_path / "data",
        storage_backend="s3",
        s3_bucket="photos",
        s3_endpoint_url=closed_endpoint(),
        s3_access_key_id="key",
        s3_secret_access_key="secret",
        s3_connect_timeout_seconds=1,
        s3_max_attempts=1,
    )
    with pytest.raises(StorageUnavailableError):
        _start(down)
