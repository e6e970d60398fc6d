"""The tables, as SQLAlchemy Core metadata shared by the code and Alembic.

Core rather than the ORM: the queue relies on exact, guarded UPDATE
statements, and Core keeps those visible. Times are integer Unix
milliseconds everywhere (the spec's unit; and SQLite 3.40 has no reliable
sub-second clock function), so the same columns work on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    or_,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    #: Spendable credits; a reservation has already been taken out of it.
    Column("credits", BigInteger, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),
    #: createdAt of this account's newest task: tasks get strictly increasing
    #: timestamps per account, so history paging by timestamp never skips one.
    Column("last_task_at", BigInteger, nullable=False, default=0),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id"), nullable=False),
    Column("name", String(200), nullable=False),
    #: The first characters of the key, for people to recognise it in lists.
    Column("prefix", String(16), nullable=False),
    #: HMAC-SHA256(server secret, key), hex. The key itself is never stored.
    Column("digest", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

uploads = Table(
    "uploads",
    metadata,
    #: The generated fileName handed to the client; also the object's name.
    Column("file_name", String(300), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id"), nullable=False),
    Column("original_file_name", String(255), nullable=False),
    Column("file_type", String(40), nullable=False),
    Column("file_size", BigInteger, nullable=False),
    Column("storage_key", String(500), nullable=False),
    #: S3-style multipart upload id, when one was offered.
    Column("multipart_id", String(1024), nullable=True, unique=True),
    Column("part_size", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    #: When the upload URL stops working.
    Column("url_expires_at", BigInteger, nullable=False),
    #: When the original is deleted (retention).
    Column("expires_at", BigInteger, nullable=False),
    #: When the original was marked deleted: no task may use it from then on.
    Column("deleted_at", BigInteger, nullable=True),
    #: When its object (and multipart upload) left the store; until then the
    #: sweeper retries, every pass (see the sweeper).
    Column("purged_at", BigInteger, nullable=True),
    Index("ix_uploads_account_id", "account_id"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id"), nullable=False),
    #: pending -> processing -> completed | failed
    Column("status", String(16), nullable=False),
    Column("model", String(64), nullable=False),
    Column("scale", Integer, nullable=False),
    Column("save_image_as", String(8), nullable=False),
    Column("enhance_face", Boolean, nullable=False),
    Column("batch_mode", Boolean, nullable=False),
    #: Percent done, 0..100, written by the worker as tiles finish.
    Column("progress", Integer, nullable=False, default=0),
    Column("error", Text, nullable=True),
    #: Claims so far. Every worker write is guarded by ``attempts = :mine``.
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_owner", String(100), nullable=True),
    #: Unix ms; 0 when nobody holds the task. NOT NULL so comparisons never
    #: meet a NULL.
    Column("lease_until", BigInteger, nullable=False, default=0),
    Column("credits_reserved", BigInteger, nullable=False),
    Column("credits_charged", BigInteger, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger, nullable=True),
    #: History pages, newest first, and their totals: status and batch_mode
    #: ride along so a filtered total counts index entries, not table rows.
    Index("ix_tasks_history", "account_id", "created_at", "status", "batch_mode"),
    Index("ix_tasks_status_lease_until", "status", "lease_until"),
)

task_files = Table(
    "task_files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String(36), ForeignKey("tasks.id"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("file_name", String(300), nullable=False),
    Column("original_file_name", String(255), nullable=False),
    Column("file_type", String(40), nullable=False),
    Column("file_size", BigInteger, nullable=False),
    Column("source_key", String(500), nullable=False),
    #: pending | completed | failed
    Column("status", String(16), nullable=False, default="pending"),
    Column("error", Text, nullable=True),
    Column("result_key", String(500), nullable=True),
    Column("thumbnail_key", String(500), nullable=True),
    Column("processed_file_name", String(300), nullable=True),
    Column("result_type", String(40), nullable=True),
    Column("final_file_size", BigInteger, nullable=True),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("completed_at", BigInteger, nullable=True),
    Column("expires_at", BigInteger, nullable=True),
    Column("deleted_at", BigInteger, nullable=True),
    Index("ix_task_files_task_id", "task_id"),
    #: Whether a task names an upload (the sweeper's in-use check, the pending cap).
    Index("ix_task_files_source_key", "source_key"),
)


#: Rows a final status's count is spread over (migration 0005 made them).
TASK_COUNT_SHARDS = 16

#: Tasks finished, by final status, counted as they finish (``lease.
#: lock_for_finish``), so that /metrics need not count a year of history at
#: every scrape. Each finish adds one to a random one of a status's rows:
#: concurrent finishes would otherwise queue on one row's lock.
task_counts = Table(
    "task_counts",
    metadata,
    #: completed | failed
    Column("status", String(16), primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("count", BigInteger, nullable=False, default=0),
)

#: Fingerprints of the signing secrets the processes of this database use
#: (``services.secrets``): one machine with another secret would refuse every
#: API key the others created, so it is refused at its start instead.
secret_fingerprints = Table(
    "secret_fingerprints",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
)

#: The object store this database is paired with (``services.pairing``): one
#: row, whose ``store_id`` the store's marker object holds too. A process
#: whose store lacks it (another bucket, a local folder where the others use
#: S3) would fail every file it claimed, so it is refused at its start.
store_identity = Table(
    "store_identity",
    metadata,
    #: Always 1: a second row conflicts, so processes starting together agree.
    Column("slot", Integer, primary_key=True, autoincrement=False),
    #: Random, not secret; also the content of the store's marker object.
    Column("store_id", String(64), nullable=False),
    #: The store as the last process that found the marker in it named it
    #: ("s3 bucket photos", "local folder /srv/objects"): compared when the
    #: marker is missing and nothing else tells, and shown when refusing.
    Column("location", Text, nullable=False),
    #: Its S3 endpoint (or AWS region), for people only; none for a folder.
    Column("endpoint", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    #: When this id was first in a store (written as its marker, or taken
    #: from one). None: the start that made the row stopped before writing
    #: the marker; only then may a store be paired by its name alone, since
    #: from then on a store without the marker may be an empty stand-in (a
    #: share not mounted) that only its name ties to the database.
    Column("paired_at", BigInteger, nullable=True),
    CheckConstraint("slot = 1", name="ck_store_identity_slot"),
)

#: Where a task is not finished yet: what the claim's partial index holds.
UNFINISHED_TASK = or_(tasks.c.status == "pending", tasks.c.status == "processing")


def _partial(name: str, *columns: Any, where: ColumnElement[bool]) -> Index:
    """An index of the rows ``where`` holds only, on both databases."""
    return Index(name, *columns, postgresql_where=where, sqlite_where=where)


# Partial indexes (migration 0004): a year of history is mostly rows marked
# deleted, and the queries below read only the rest. Each holds the live rows
# alone, so its size and its scans follow what is live, not what is kept.

#: An account's live uploads, by expiry: the pending cap (get-upload-url), and
#: the sweeper's expired originals (it reads this small index whole). No
#: index on live rows by expiry alone: PostgreSQL estimates "not deleted and
#: not expired" as a handful of rows (it multiplies the two), and then chose
#: such an index over the primary key for start-task's lock on its uploads,
#: reading every live upload of the service.
_partial(
    "ix_uploads_live_account_id",
    uploads.c.account_id,
    uploads.c.expires_at,
    where=uploads.c.deleted_at.is_(None),
)
#: The sweeper's rows marked deleted but not yet purged (usually none).
_partial(
    "ix_uploads_unpurged",
    uploads.c.deleted_at,
    where=and_(uploads.c.deleted_at.is_not(None), uploads.c.purged_at.is_(None)),
)
#: The sweeper's expired results: delivered files not yet deleted, by expiry.
_partial(
    "ix_task_files_live_expires_at",
    task_files.c.expires_at,
    where=and_(task_files.c.deleted_at.is_(None), task_files.c.expires_at.is_not(None)),
)
#: The claim: unfinished tasks, oldest first (the first one due is near the front).
_partial("ix_tasks_queue", tasks.c.created_at, where=UNFINISHED_TASK)
