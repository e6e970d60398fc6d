"""Rows as the early schema revisions know them, for migration tests."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, insert

from upscayl_cloud.db.tables import accounts, uploads


def early_uploads(engine: Engine, count: int, deleted_at: Callable[[int], int | None]) -> None:
    """Account ``a`` and ``count`` uploads ``u<n>.png`` with only the columns
    revision 0002 has (``deleted_at(n)`` says when each was marked deleted),
    so that a test can then upgrade through 0003's backfill."""
    with engine.begin() as conn:
        conn.execute(insert(accounts).values(id="a", name="a", created_at=1))
        conn.execute(
            insert(uploads),
            [
                {
                    "file_name": f"u{n}.png",
                    "account_id": "a",
                    "original_file_name": f"u{n}.png",
                    "file_type": "image/png",
                    "file_size": 1,
                    "storage_key": f"uploads/a/u{n}.png",
                    "created_at": 1,
                    "url_expires_at": 2,
                    "expires_at": 3,
                    "deleted_at": deleted_at(n),
                }
                for n in range(count)
            ],
        )
