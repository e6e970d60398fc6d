from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, update

from upscayl_cloud.config import MAX_CREDITS
from upscayl_cloud.db.tables import api_keys
from upscayl_cloud.services import keys
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.errors import BadRequestError, NotFoundError, UnauthorizedError


def test_key_is_stored_only_as_a_digest(ctx: Context) -> None:
    key, info = keys.create_key(ctx, "alice", 5)
    assert key.startswith("uc_") and len(key) > 40
    with ctx.db.begin() as conn:
        row = conn.execute(select(api_keys)).one()
    assert key not in {str(v) for v in row}
    assert row.digest != key and len(row.digest) == 64
    assert info.credits == 5 and info.prefix == key[:10]


def test_authenticate(ctx: Context) -> None:
    key, info = keys.create_key(ctx, "alice")
    principal = keys.authenticate(ctx, key)
    assert principal.account_id == info.account_id and principal.key_id == info.id
    for bad in (None, "", key + "x", "uc_nope", "x" * 500):
        with pytest.raises(UnauthorizedError):
            keys.authenticate(ctx, bad)


def test_revoked_key_stops_working(ctx: Context) -> None:
    key, info = keys.create_key(ctx, "alice")
    revoked, revoked_now = keys.revoke_key(ctx, info.prefix)
    assert revoked_now and revoked.revoked_at is not None
    with pytest.raises(UnauthorizedError):
        keys.authenticate(ctx, key)
    again, revoked_now = keys.revoke_key(ctx, info.id)
    assert not revoked_now and again.revoked_at == revoked.revoked_at


def test_racing_revokes_revoke_once(ctx: Context) -> None:
    """Two operators revoking one key together were both told they revoked
    it (each looked before revoking); the update's condition tells which did."""
    _key, info = keys.create_key(ctx, "alice")
    start = threading.Barrier(6)

    def revoke() -> bool:
        start.wait()
        return keys.revoke_key(ctx, info.id)[1]

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda _: revoke(), range(6)))
    assert sorted(outcomes) == [False] * 5 + [True]


def test_second_key_shares_the_account_and_credits(ctx: Context) -> None:
    _key, first = keys.create_key(ctx, "alice", 3)
    _key2, second = keys.create_key(ctx, "alice-ci", 2, account_id=first.account_id)
    assert second.account_id == first.account_id and second.credits == 5
    with pytest.raises(NotFoundError):
        keys.create_key(ctx, "x", account_id="missing")


def test_add_credits_by_key_id_prefix_or_key(ctx: Context) -> None:
    key, info = keys.create_key(ctx, "alice", 1)
    assert keys.add_credits(ctx, info.id, 2).credits == 3
    assert keys.add_credits(ctx, info.prefix, 2).credits == 5
    assert keys.add_credits(ctx, key, 2).credits == 7
    with pytest.raises(NotFoundError):
        keys.add_credits(ctx, "nobody", 1)
    assert keys.add_credits(ctx, info.id, -7).credits == 0
    with pytest.raises(BadRequestError):
        keys.add_credits(ctx, info.id, -1)


def _set_prefix(ctx: Context, key_id: str, prefix: str) -> None:
    """Give a key a chosen prefix, to build collisions random keys never make."""
    with ctx.db.begin() as conn:
        conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(prefix=prefix))


def test_any_unique_start_of_the_shown_prefix_names_a_key(ctx: Context) -> None:
    _key, first = keys.create_key(ctx, "a")
    _key, second = keys.create_key(ctx, "b")
    _set_prefix(ctx, first.id, "uc_abcdXY1")
    _set_prefix(ctx, second.id, "uc_abcdZW2")
    assert keys.resolve_key_id(ctx, "uc_abcdX") == first.id
    assert keys.resolve_key_id(ctx, "uc_abcdZ") == second.id
    # As ``keys list`` prints it, and the exact id still works.
    assert keys.resolve_key_id(ctx, "uc_abcdXY1...") == first.id
    assert keys.resolve_key_id(ctx, second.id) == second.id
    with pytest.raises(BadRequestError, match="2 keys match 'uc_abcd'"):
        keys.resolve_key_id(ctx, "uc_abcd")
    # Keys are base64: case matters, and ``_`` is a character, not a wildcard.
    for other in ("uc_ABCDX", "uc_ab_dX"):
        with pytest.raises(NotFoundError):
            keys.resolve_key_id(ctx, other)
    with pytest.raises(NotFoundError, match="at least 6 characters"):
        keys.resolve_key_id(ctx, "uc_ab")


def test_an_unknown_key_is_never_echoed_whole(ctx: Context) -> None:
    key, _info = keys.create_key(ctx, "alice")
    with pytest.raises(NotFoundError) as caught:
        keys.resolve_key_id(ctx, key + "x")
    assert key not in caught.value.public_message
    assert key[:10] + "..." in caught.value.public_message


def test_remove_credits_refuses_more_than_the_balance(ctx: Context) -> None:
    _key, info = keys.create_key(ctx, "alice", 25)
    with pytest.raises(BadRequestError, match="at most 25 can be removed"):
        keys.remove_credits(ctx, info.prefix, 1000)
    assert keys.get_key(ctx, info.id).credits == 25
    assert keys.remove_credits(ctx, info.prefix[:6], 25).credits == 0
    with pytest.raises(BadRequestError):
        keys.remove_credits(ctx, info.id, -1)


def test_a_balance_never_leaves_a_database_integer(ctx: Context) -> None:
    """Past int64 SQLite stored the sum as a float (credits 9.2e18), and
    PostgreSQL refused it with a 500: a top-up is refused whole instead."""
    _key, info = keys.create_key(ctx, "rich", MAX_CREDITS - 10)
    with pytest.raises(BadRequestError, match="at most 10 can be added"):
        keys.add_credits(ctx, info.id, 11)
    with pytest.raises(BadRequestError, match="at most"):
        keys.add_credits(ctx, info.id, 2**63)
    with pytest.raises(BadRequestError, match="at most"):
        keys.create_key(ctx, "richer", 2**64)
    balance = keys.add_credits(ctx, info.id, 10).credits
    assert balance == MAX_CREDITS and isinstance(balance, int)
    # A second key of the account adds to the same balance, within the cap too
    # (past it, every later removal was refused).
    with pytest.raises(BadRequestError, match="at most 0 can be added"):
        keys.create_key(ctx, "second", 1, account_id=info.account_id)
    assert keys.remove_credits(ctx, info.id, 1).credits == MAX_CREDITS - 1


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "1 to 200 characters long, not 0"),
        ("x" * 201, "1 to 200 characters long, not 201"),
        ("bad\udcffname", "must be UTF-8 text"),
        ("nul\x00byte", "control characters"),
        ("\x1b[31mred", "control characters"),
    ],
)
def test_a_key_name_either_database_would_refuse_is_a_clear_error(
    ctx: Context, name: str, says: str
) -> None:
    """PostgreSQL refused names over 200 characters (and NUL), where SQLite
    kept them; both failed on text that is not UTF-8. Nothing is written."""
    with pytest.raises(BadRequestError, match=says):
        keys.create_key(ctx, name, 5)
    assert keys.list_keys(ctx) == []


def test_a_key_name_of_200_characters_is_kept_whole(ctx: Context) -> None:
    name = "ключ-" * 40  # 200 characters, 360 bytes
    _key, info = keys.create_key(ctx, name)
    assert len(info.name) == 200 and keys.list_keys(ctx)[0].name == name
