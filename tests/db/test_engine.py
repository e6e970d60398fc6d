"""What ``db.engine`` promises about transactions, on both databases."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import exc, select, update

from support.tasks import queued_task
from upscayl_cloud.db.engine import reading
from upscayl_cloud.db.tables import accounts
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
