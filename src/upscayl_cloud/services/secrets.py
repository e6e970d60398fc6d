"""One signing secret for every process of a database, checked at start.

API keys are stored as HMACs under the signing secret, and the local
store's links are signed with it. A machine whose secret differs from the
others' (``UPSCAYL_SECRET_KEYS`` unset, so each machine made its own
``secret.key`` in its own data folder) answered 401 to every key created
elsewhere: intermittently, behind a load balancer, with nothing in any log.
Each process therefore records its secrets' fingerprints in the database
and refuses to start when none of its secrets is one the database knows.

Rotation keeps working: a process started with ``new,old`` shares ``old``
with those still on ``old`` alone, and records ``new`` for those started
later with ``new`` only. The fingerprint is an HMAC of a fixed text under
the secret: it tells whether two secrets are the same, not what they are.

Besides the service's own processes, ``keys create`` records the secret it
hashed a key with: run before the first ``serve``, it recorded nothing, and
a server then started with another secret answered 401 to that key while
``keys list`` showed it active.
"""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import Connection, Engine, insert, select, text

from upscayl_cloud.config import Settings
from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.db.tables import secret_fingerprints

_FINGERPRINT_TEXT = b"upscayl-cloud signing secret fingerprint"
#: The PostgreSQL advisory lock of the check (migrate.py's key + 1).
_LOCK_KEY = 0x75707363_61796C02


class SecretMismatchError(Exception):
    """This process's signing secrets are none of those the database's other
    processes use: every API key they created would be refused here."""


def fingerprint(secret: bytes) -> str:
    return hmac.new(secret, _FINGERPRINT_TEXT, hashlib.sha256).hexdigest()


def check_shared_secret(db: Engine, settings: Settings, record: bool = True) -> None:
    """Raise :class:`SecretMismatchError` when the database knows secrets and
    none of them is ours; else, with ``record``, add ours to what it knows."""
    with db.begin() as conn:
        check_shared_secret_in(conn, settings, record=record)


def check_shared_secret_in(conn: Connection, settings: Settings, record: bool = True) -> None:
    """:func:`check_shared_secret` inside the caller's transaction: a key's
    digest and its secret's fingerprint are written together, or neither."""
    ours = {fingerprint(secret) for secret in settings.signing_secrets()}
    if conn.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE serialises already
        # Two first starts at once, with different secrets, would both see none.
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    known = set(conn.execute(select(secret_fingerprints.c.fingerprint)).scalars())
    if known and not known & ours:
        mine = ", ".join(sorted(f[:16] for f in ours))
        raise SecretMismatchError(
            "this machine's signing secret is not the one the other processes of this "
            "database use, so every API key they created would be refused here: set "
            "UPSCAYL_SECRET_KEYS to the same value on every machine (deployment.md, "
            f"Roles). This machine's secret has fingerprint {mine}...; a row of "
            "secret_fingerprints recorded by a process started with a wrong secret "
            "may be deleted."
        )
    missing = ours - known
    if record and missing:
        now = now_ms()
        conn.execute(
            insert(secret_fingerprints),
            [{"fingerprint": f, "created_at": now} for f in sorted(missing)],
        )
