"""What ``db.engine`` promises about transactions, on both databases."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import exc, select, update

from support.tasks import queued_task
from upscayl_cloud.db import engine
from upscayl_cloud.db.engine import reading
from upscayl_cloud.db.tables import accounts
from upscayl_cloud.queue.lease import claim, renew
from upscayl_cloud.services import keys, status
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.keys import Principal


def test_reads_go_on_while_a_writer_holds_its_transaction(
    ctx: Context, principal: Principal
) -> None:
    """A status call, a history page, a key check and a credits read run
    while another transaction writes and has not committed: on SQLite a
    reader takes no write lock (it used to wait for the writer, up to the
    30 s busy timeout, and queue behind other readers in the busy handler's
    sleeps)."""
    task_id = queued_task(ctx, principal)
    key = keys.create_key(ctx, "reader", 1)[0]
    done: list[str] = []

    def read() -> None:
        status.task_status(ctx, principal, "http://x", task_id)
        status.history(ctx, principal, "http://x")
        keys.authenticate(ctx, key)
        keys.account_credits(ctx, principal.account_id)
        done.append("read")

    with ctx.db.begin() as writer:
        writer.execute(update(accounts).values(credits=accounts.c.credits + 1))
        reader = threading.Thread(target=read)
        reader.start()
        reader.join(timeout=10)
        assert done == ["read"], "the reads waited for the writer"


def test_a_write_inside_reading_is_refused_and_leaves_no_trace(
    ctx: Context, principal: Principal
) -> None:
    """On both databases, at once: not only when another writer happens to
    be first (SQLite's deferred transaction would otherwise write). The
    pooled connection then writes as usual again."""
    credits = select(accounts.c.credits).where(accounts.c.id == principal.account_id)
    with ctx.db.connect() as conn:
        before = conn.execute(credits).scalar_one()
    with pytest.raises(exc.DBAPIError), reading(ctx.db) as conn:
        conn.execute(update(accounts).values(credits=accounts.c.credits + 1))
    for _ in range(3):  # whichever pooled connection comes next
        with ctx.db.begin() as conn:
            conn.execute(update(accounts).values(credits=accounts.c.credits + 1))
    with reading(ctx.db) as conn:
        assert conn.execute(credits).scalar_one() == before + 3


def test_reading_sees_one_snapshot_throughout(ctx: Context, principal: Principal) -> None:
    """A history page's total and its rows come from one moment: on
    PostgreSQL's default READ COMMITTED each statement saw a new snapshot,
    and a task started between the two was in the rows but not the total."""
    credits = select(accounts.c.credits).where(accounts.c.id == principal.account_id)
    with reading(ctx.db) as conn:
        before = conn.execute(credits).scalar_one()
        with ctx.db.begin() as writer:
            writer.execute(update(accounts).values(credits=accounts.c.credits + 1))
        assert conn.execute(credits).scalar_one() == before
    with reading(ctx.db) as conn:
        assert conn.execute(credits).scalar_one() == before + 1


def test_stored_times_follow_the_databases_clock(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine whose clock runs a lease ahead (61 s: a stand-in, as a test
    cannot set the system clock) neither takes over a task whose worker
    still renews it nor writes leases others see as expired: on PostgreSQL
    it measures its difference from the database's clock and corrects by it
    (SQLite is on this machine: there is nothing to correct)."""
    task_id = queued_task(ctx, principal)
    held = claim(ctx.db, "on-time", 30, 3)
    assert held is not None and held.task_id == task_id
    real_time_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() + 61 * 10**9)
    try:
        offset = engine.sync_clock(ctx.db)
        if ctx.db.dialect.name == "postgresql":
            assert abs(offset + 61_000) < 1_000
            assert abs(engine.now_ms() - real_time_ns() // 10**6) < 1_000
            assert claim(ctx.db, "ahead", 30, 3) is None  # the lease still holds
        else:
            assert offset == 0
    finally:
        monkeypatch.undo()
        engine.sync_clock(ctx.db)
    assert abs(engine.now_ms() - time.time_ns() // 10**6) < 1_000
    assert renew(ctx.db, held, 30)


def test_a_clock_stepped_between_syncs_does_not_reach_stored_times(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clock stepped a lease ahead after the last sync (NTP, a resumed VM;
    stepped by a stand-in, as a test cannot set the system clock) let this
    machine take over a lease still renewed, until the next sync a sweep
    later. On PostgreSQL time since the sync is measured on a clock that is
    never stepped; on SQLite every process reads this machine's clock, the
    database's own, so a step moves all of them together."""
    engine.sync_clock(ctx.db)
    task_id = queued_task(ctx, principal)
    held = claim(ctx.db, "on-time", 30, 3)
    assert held is not None and held.task_id == task_id
    real_time_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() + 61 * 10**9)
    if ctx.db.dialect.name == "postgresql":
        assert abs(engine.now_ms() - real_time_ns() // 10**6) < 1_000
        assert claim(ctx.db, "stepped", 30, 3) is None  # the lease still holds
    else:
        assert abs(engine.now_ms() - (real_time_ns() // 10**6 + 61_000)) < 1_000
    monkeypatch.undo()
    assert renew(ctx.db, held, 30)


def test_postgresql_connections_notice_a_server_that_stops_answering(
    postgres_server: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without these a vanished server held each request (and its pooled
    connection) for the kernel's ~15 minutes of retransmissions; a URL's own
    value still wins, and so does libpq's PGCONNECT_TIMEOUT."""
    url = postgres_server.new_database()  # type: ignore[attr-defined]
    cases = ((url, "10", None), (url + "?connect_timeout=3", "3", None), (url, "4", "4"))
    for given, expected_connect_timeout, environment in cases:
        if environment is not None:
            monkeypatch.setenv("PGCONNECT_TIMEOUT", environment)
        made = engine.make_engine(given)
        try:
            with made.connect() as conn:
                parameters = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
        finally:
            made.dispose()
        assert parameters["connect_timeout"] == expected_connect_timeout
        assert (parameters["keepalives"], parameters["tcp_user_timeout"]) == ("1", "30000")
