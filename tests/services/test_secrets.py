"""Every process of a database signs with one secret, checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from support.context import new_principal
from upscayl_cloud.cli import keys as keys_cli
from upscayl_cloud.config import Settings, get_settings
from upscayl_cloud.db.tables import secret_fingerprints
from upscayl_cloud.services import keys
from upscayl_cloud.services.context import Context, build_context
from upscayl_cloud.services.secrets import SecretMismatchError, fingerprint


def _start(settings: Settings, secret_keys: str) -> None:
    """A start of the service (serve, worker): its secret is recorded."""
    changed = settings.model_copy(update={"secret_keys": secret_keys})
    build_context(changed, records_secret=True).db.dispose()


def test_a_process_with_another_secret_is_refused_at_its_start(settings: Settings) -> None:
    """It would have answered 401 to every key the others created."""
    _start(settings, "first")
    _start(settings, "first")
    with pytest.raises(SecretMismatchError, match="UPSCAYL_SECRET_KEYS"):
        _start(settings, "other")


def test_rotation_shares_a_secret_at_every_step(settings: Settings) -> None:
    """``new,old`` beside ``old``, then ``new`` alone: each start shares a
    secret with what the database knows."""
    for step in ("old", "new,old", "old", "new"):
        _start(settings, step)


def test_the_command_line_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSCAYL_DATA_DIR", str(tmp_path / "data"))
    cli = typer.Typer()
    keys_cli.register(cli)
    monkeypatch.setenv("UPSCAYL_SECRET_KEYS", "one")
    get_settings.cache_clear()
    assert CliRunner().invoke(cli, ["keys", "create"]).exit_code == 0  # records "one"
    for secret, code in (("one", 0), ("two", 1)):
        monkeypatch.setenv("UPSCAYL_SECRET_KEYS", secret)
        get_settings.cache_clear()
        result = CliRunner().invoke(cli, ["keys", "list"])
        assert result.exit_code == code, result.output
    get_settings.cache_clear()
    assert result.output.startswith("Cannot start: this machine's signing secret is not")
    assert "Traceback" not in result.output and "two" not in result.output


def _cli_on(settings: Settings, monkeypatch: pytest.MonkeyPatch, secret_keys: str) -> typer.Typer:
    """The ``keys`` commands on ``settings``' data folder and database."""
    monkeypatch.setenv("UPSCAYL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("UPSCAYL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("UPSCAYL_SECRET_KEYS", secret_keys)
    get_settings.cache_clear()
    cli = typer.Typer()
    keys_cli.register(cli)
    return cli


def test_a_key_made_before_the_first_start_records_its_secret(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``keys create`` before any ``serve`` recorded nothing: a server then
    started with another secret answered 401 to the key, while ``keys list``
    showed it active. The server refuses to start instead."""
    cli = _cli_on(settings, monkeypatch, "operator")
    try:
        created = CliRunner().invoke(cli, ["keys", "create", "--name", "early"])
    finally:
        get_settings.cache_clear()
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    with pytest.raises(SecretMismatchError):
        _start(settings, "another")
    _start(settings, "operator")
    ctx = build_context(settings.model_copy(update={"secret_keys": "operator"}))
    try:
        assert keys.authenticate(ctx, key).key_id
    finally:
        ctx.db.dispose()


def test_a_key_and_its_secret_are_recorded_together(ctx: Context) -> None:
    """The service itself records the secret with the key's digest, whoever
    calls it; a database that knows another secret refuses the key whole."""
    new_principal(ctx)
    with ctx.db.begin() as conn:
        recorded = set(conn.execute(select(secret_fingerprints.c.fingerprint)).scalars())
    assert recorded == {fingerprint(b"test-secret-one")}
    elsewhere = Context(
        settings=ctx.settings.model_copy(update={"secret_keys": "another"}),
        db=ctx.db,
        storage=ctx.storage,
    )
    with pytest.raises(SecretMismatchError):
        keys.create_key(elsewhere, "refused")
    assert len(keys.list_keys(ctx)) == 1


def test_keys_keep_working_when_the_secret_file_goes(settings: Settings) -> None:
    """The generated ``secret.key`` deleted under a running server: it made a
    new one at the next request and answered 401 to every key, silently.
    The process keeps the secret it started with, and writes that one back
    for the processes started after it."""
    generated = settings.model_copy(update={"secret_keys": ""})
    ctx = build_context(generated, records_secret=True)
    try:
        key, _info = keys.create_key(ctx, "kept")
        started_with = (settings.data_dir / "secret.key").read_bytes()
        (settings.data_dir / "secret.key").unlink()
        assert keys.authenticate(ctx, key).key_id
        again = build_context(generated, records_secret=True)  # the app's own context
        try:
            assert keys.authenticate(again, key).key_id
        finally:
            again.db.dispose()
    finally:
        ctx.db.dispose()
    assert (settings.data_dir / "secret.key").read_bytes().strip() == started_with.strip()
