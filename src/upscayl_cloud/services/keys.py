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
import unicodedata
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, select, update

from upscayl_cloud.config import MAX_CREDITS
from upscayl_cloud.db.engine import now_ms, reading
from upscayl_cloud.db.tables import accounts, api_keys
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.errors import BadRequestError, NotFoundError, UnauthorizedError
from upscayl_cloud.services.secrets import check_shared_secret_in

KEY_PREFIX = "uc_"
#: Characters of a key kept in the clear (and shown by ``keys list``).
SHOWN_PREFIX_LENGTH = 10
#: The shortest key prefix accepted to name a key: ``uc_`` and three random
#: characters, enough to tell apart the keys of a small server without
#: letting ``uc_`` alone (which every key starts with) name one.
MIN_PREFIX_LENGTH = 6
#: Longest name of a key (and of its account): their columns' size.
MAX_NAME_LENGTH = 200


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
    The signing secret's fingerprint is recorded with its digest, so that a
    server started later with another secret refuses to start instead of
    refusing this key (services/secrets.py).
    """
    check_key_name(name)
    _check_amount(credits)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    digest = _digest(ctx.settings.signing_secrets()[0], key)
    now = now_ms()
    key_id = str(uuid.uuid4())
    with ctx.db.begin() as conn:
        check_shared_secret_in(conn, ctx.settings)
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
                prefix=key[:SHOWN_PREFIX_LENGTH],
                digest=digest,
                created_at=now,
                revoked_at=None,
            )
        )
    return key, get_key(ctx, key_id)


def check_key_name(name: str) -> None:
    """A name both databases store as given: at most ``MAX_NAME_LENGTH``
    characters (PostgreSQL refused longer ones where SQLite kept them),
    UTF-8 text (a terminal in another encoding passes undecodable bytes),
    and no control characters, which would break ``keys list``'s lines (and
    PostgreSQL refuses NUL)."""
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise BadRequestError(
            f"A key name is 1 to {MAX_NAME_LENGTH} characters long, not {len(name)}"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequestError(
            "A key name must be UTF-8 text; this one holds bytes that are not "
            "(is the terminal set to another encoding?)"
        ) from None
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise BadRequestError(
            "A key name cannot hold control characters (line breaks, tabs, escapes)"
        )


def _account_exists(conn: Connection, account_id: str) -> None:
    if conn.execute(select(accounts.c.id).where(accounts.c.id == account_id)).first() is None:
        raise NotFoundError(f"No account {account_id}")


def _add(conn: Connection, account_id: str, amount: int) -> None:
    """A second key's credits go to its account, within MAX_CREDITS as a
    top-up's do (``keys create --account`` went past it, and the balance
    then refused every removal)."""
    changed = conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id, accounts.c.credits + amount <= MAX_CREDITS)
        .values(credits=accounts.c.credits + amount)
    )
    if changed.rowcount != 1:
        balance = conn.execute(
            select(accounts.c.credits).where(accounts.c.id == account_id)
        ).scalar_one()
        raise BadRequestError(
            f"Cannot add {amount} credits: the account has {balance}, and a balance holds "
            f"at most {MAX_CREDITS}, so at most {max(0, MAX_CREDITS - balance)} can be added"
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


def _shown(ident: str) -> str:
    """``ident`` as safe to echo back: a full key is cut to its stored prefix,
    so a mistyped or unknown key never lands whole in a terminal or a log."""
    if len(ident) > SHOWN_PREFIX_LENGTH and ident.startswith(KEY_PREFIX):
        return ident[:SHOWN_PREFIX_LENGTH] + "..."
    return ident


def resolve_key_id(ctx: Context, ident: str) -> str:
    """A key id from its exact id, the key itself, or any unique start of the
    prefix ``keys list`` shows (at least ``MIN_PREFIX_LENGTH`` characters).

    A trailing ``...`` is dropped, so the prefix can be pasted as listed.
    Prefixes are compared case-sensitively (``substr``, not ``LIKE``, which is
    case-blind on SQLite and reads ``_`` as a wildcard): keys are base64.
    """
    ident = ident.strip()
    text = ident.rstrip(".")
    columns = (api_keys.c.id, api_keys.c.prefix)
    with ctx.db.begin() as conn:
        rows = conn.execute(select(*columns).where(api_keys.c.id == ident)).all()
        if not rows and MIN_PREFIX_LENGTH <= len(text) <= SHOWN_PREFIX_LENGTH:
            rows = conn.execute(
                select(*columns).where(func.substr(api_keys.c.prefix, 1, len(text)) == text)
            ).all()
        elif not rows and text.startswith(KEY_PREFIX):
            digests = [_digest(s, text) for s in ctx.settings.signing_secrets()]
            rows = conn.execute(select(*columns).where(api_keys.c.digest.in_(digests))).all()
    if len(rows) > 1:
        raise BadRequestError(
            f"{len(rows)} keys match {_shown(ident)!r}: give more of the prefix, or the key id"
        )
    if not rows:
        hint = ""
        if len(text) < MIN_PREFIX_LENGTH:
            hint = f" (a key prefix needs at least {MIN_PREFIX_LENGTH} characters)"
        raise NotFoundError(f"No key matches {_shown(ident)!r}{hint}")
    return rows[0].id


def revoke_key(ctx: Context, ident: str) -> tuple[KeyInfo, bool]:
    """Revoke a key; return it and whether this call revoked it (False: it
    was revoked already, by an earlier call or one racing this one, which
    the update's condition tells apart where a look before could not)."""
    key_id = resolve_key_id(ctx, ident)
    with ctx.db.begin() as conn:
        revoked = conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now_ms())
        ).rowcount
    return get_key(ctx, key_id), revoked == 1


def add_credits(ctx: Context, ident: str, amount: int) -> KeyInfo:
    """Top up the account behind a key (id, prefix or the key itself).

    A negative ``amount`` removes credits, but never below zero: a removal
    larger than the balance is refused whole (not clamped), and the error says
    how many could be removed, so an operator never loses track of a balance.
    """
    _check_amount(amount)
    key_id = resolve_key_id(ctx, ident)
    info = get_key(ctx, key_id)
    with ctx.db.begin() as conn:
        # Conditional, so a removal can never take an account below zero,
        # nor a top-up past MAX_CREDITS (SQLite would turn the sum into a
        # float past int64, PostgreSQL refuse it).
        # The cap only on a top-up: a balance above it (kept from before the
        # cap) can still be brought down.
        bound = (
            accounts.c.credits + amount <= MAX_CREDITS
            if amount > 0
            else accounts.c.credits + amount >= 0
        )
        changed = conn.execute(
            update(accounts)
            .where(accounts.c.id == info.account_id, bound)
            .values(credits=accounts.c.credits + amount)
        )
        if changed.rowcount != 1:
            balance = conn.execute(
                select(accounts.c.credits).where(accounts.c.id == info.account_id)
            ).scalar_one()
            if amount > 0:
                raise BadRequestError(
                    f"Cannot add {amount} credits: the account has {balance}, and a balance "
                    f"holds at most {MAX_CREDITS}, so at most {max(0, MAX_CREDITS - balance)} "
                    "can be added"
                )
            raise BadRequestError(
                f"Cannot remove {-amount} credits: the account has only {balance}, "
                f"so at most {balance} can be removed"
            )
    return get_key(ctx, key_id)


def _check_amount(amount: int) -> None:
    if abs(amount) > MAX_CREDITS:
        raise BadRequestError(f"A credit amount is at most {MAX_CREDITS}, not {amount}")


def remove_credits(ctx: Context, ident: str, amount: int) -> KeyInfo:
    """Take ``amount`` (>= 0) credits from the account behind a key; refused
    whole if the account has fewer (see ``add_credits``)."""
    if amount < 0:
        raise BadRequestError("The number of credits to remove cannot be negative")
    return add_credits(ctx, ident, -amount)


def authenticate(ctx: Context, key: str | None) -> Principal:
    """The caller behind an ``X-API-Key`` value, or UnauthorizedError."""
    if not key or len(key) > 200:
        raise UnauthorizedError()
    candidates = {_digest(s, key) for s in ctx.settings.signing_secrets()}
    with reading(ctx.db) as conn:
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
    """The account's spendable credits, as a read (for the web page's
    counter and start-task's first look; the reservation is the check)."""
    with reading(ctx.db) as conn:
        value = conn.execute(
            select(accounts.c.credits).where(accounts.c.id == account_id)
        ).scalar_one_or_none()
    if value is None:
        raise NotFoundError()
    return int(value)
