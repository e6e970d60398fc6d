"""Accounts, API keys and credit top-ups.

A key is 256 random bits behind a readable prefix, shown once. Only
HMAC-SHA256(server secret, key) is stored and looked up, so a stolen database
alone does not yield usable keys, and lookups by digest leak no timing
about the key (the final comparison is constant-time).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.db.tables import accounts, api_keys
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.errors import BadRequestError, NotFoundError, UnauthorizedError

KEY_PREFIX = "uc_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the account that owns everything they touch."""

    account_id: str
    key_id: str


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    prefix: str
    account_id: str
    credits: int
    created_at: int
    revoked_at: int | None


def _digest(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def create_key(
    ctx: Context, name: str, credits: int = 0, account_id: str | None = None
) -> tuple[str, KeyInfo]:
    """A new key (for a new account, or a second key of ``account_id``).

    Returns the key itself, which is never stored and cannot be shown again.
    """
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    digest = _digest(ctx.settings.signing_secrets()[0], key)
    now = now_ms()
    key_id = str(uuid.uuid4())
    with ctx.db.begin() as conn:
        if account_id is None:
            account_id = str(uuid.uuid4())
            conn.execute(
                insert(accounts).values(
                    id=account_id, name=name, credits=credits, created_at=now, last_task_at=0
                )
            )
        else:
            _account_exists(conn, account_id)
            if credits:
                _add(conn, account_id, credits)
        conn.execute(
            insert(api_keys).values(
                id=key_id,
                account_id=account_id,
                name=name,
                prefix=key[:10],
                digest=digest,
                created_at=now,
                revoked_at=None,
            )
        )
    return key, get_key(ctx, key_id)


def _account_exists(conn: Connection, account_id: str) -> None:
    if conn.execute(select(accounts.c.id).where(accounts.c.id == account_id)).first() is None:
        raise NotFoundError(f"No account {account_id}")


def _add(conn: Connection, account_id: str, amount: int) -> None:
    conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(credits=accounts.c.credits + amount)
    )


def _key_query() -> object:
    return select(
        api_keys.c.id,
        api_keys.c.name,
        api_keys.c.prefix,
        api_keys.c.account_id,
        accounts.c.credits,
        api_keys.c.created_at,
        api_keys.c.revoked_at,
    ).join(accounts, accounts.c.id == api_keys.c.account_id)


def get_key(ctx: Context, key_id: str) -> KeyInfo:
    with ctx.db.begin() as conn:
        row = conn.execute(_key_query().where(api_keys.c.id == key_id)).first()
    if row is None:
        raise NotFoundError(f"No key {key_id}")
    return KeyInfo(*row)


def list_keys(ctx: Context) -> list[KeyInfo]:
    with ctx.db.begin() as conn:
        rows = conn.execute(_key_query().order_by(api_keys.c.created_at)).all()
    return [KeyInfo(*row) for row in rows]


def resolve_key_id(ctx: Context, ident: str) -> str:
    """A key id from its id, its displayed prefix, or the key itself."""
    with ctx.db.begin() as conn:
        rows = conn.execute(
            select(api_keys.c.id, api_keys.c.prefix, api_keys.c.digest).where(
                (api_keys.c.id == ident) | (api_keys.c.prefix == ident)
            )
        ).all()
        if not rows and ident.startswith(KEY_PREFIX):
            digests = [_digest(s, ident) for s in ctx.settings.signing_secrets()]
            rows = conn.execute(
                select(api_keys.c.id, api_keys.c.prefix, api_keys.c.digest).where(
                    api_keys.c.digest.in_(digests)
                )
            ).all()
    if len(rows) != 1:
        raise NotFoundError(f"No single key matches {ident!r}")
    return rows[0].id


def revoke_key(ctx: Context, ident: str) -> KeyInfo:
    key_id = resolve_key_id(ctx, ident)
    with ctx.db.begin() as conn:
        conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now_ms())
        )
    return get_key(ctx, key_id)


def add_credits(ctx: Context, ident: str, amount: int) -> KeyInfo:
    """Top up the account behind a key (id, prefix or the key itself)."""
    key_id = resolve_key_id(ctx, ident)
    info = get_key(ctx, key_id)
    with ctx.db.begin() as conn:
        # Conditional, so a removal can never take an account below zero.
        changed = conn.execute(
            update(accounts)
            .where(accounts.c.id == info.account_id, accounts.c.credits + amount >= 0)
            .values(credits=accounts.c.credits + amount)
        )
    if changed.rowcount != 1:
        raise BadRequestError(f"The account has only {info.credits} credits")
    return get_key(ctx, key_id)


def authenticate(ctx: Context, key: str | None) -> Principal:
    """The caller behind an ``X-API-Key`` value, or UnauthorizedError."""
    if not key or len(key) > 200:
        raise UnauthorizedError()
    candidates = {_digest(s, key) for s in ctx.settings.signing_secrets()}
    with ctx.db.begin() as conn:
        rows = conn.execute(
            select(api_keys.c.id, api_keys.c.account_id, api_keys.c.digest).where(
                api_keys.c.digest.in_(candidates), api_keys.c.revoked_at.is_(None)
            )
        ).all()
    for row in rows:
        if any(hmac.compare_digest(row.digest, c) for c in candidates):
            return Principal(account_id=row.account_id, key_id=row.id)
    raise UnauthorizedError()


def count_keys(ctx: Context) -> int:
    with ctx.db.begin() as conn:
        return len(conn.execute(select(api_keys.c.id)).all())


def account_credits(ctx: Context, account_id: str) -> int:
    with ctx.db.begin() as conn:
        value = conn.execute(
            select(accounts.c.credits).where(accounts.c.id == account_id)
        ).scalar_one_or_none()
    if value is None:
        raise NotFoundError()
    return int(value)
