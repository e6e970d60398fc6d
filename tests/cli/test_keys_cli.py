"""``keys`` and ``credits`` commands through Typer, on a real data directory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from support.context import make_settings
from upscayl_cloud.cli import keys as keys_cli
from upscayl_cloud.cli import serve as serve_cli
from upscayl_cloud.config import get_settings
from upscayl_cloud.services import keys
from upscayl_cloud.services.context import build_context


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("UPSCAYL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("UPSCAYL_SECRET_KEYS", "cli-secret")
    get_settings.cache_clear()
    cli = typer.Typer()
    keys_cli.register(cli)
    serve_cli.register(cli)
    yield cli
    get_settings.cache_clear()


def test_create_prints_key_alone_on_last_line(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["keys", "create", "--name", "alice", "--credits", "7"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    ctx = build_context(get_settings())
    assert keys.authenticate(ctx, key).account_id
    listed = CliRunner().invoke(app, ["keys", "list"])
    assert "alice" in listed.output and key[:10] in listed.output and key not in listed.output


def test_json_revoke_and_credits(app: typer.Typer) -> None:
    runner = CliRunner()
    created = json.loads(runner.invoke(app, ["keys", "create", "--name", "b", "--json"]).stdout)
    assert created["credits"] == 0 and created["key"].startswith("uc_")
    added = runner.invoke(app, ["credits", "add", created["prefix"], "12"])
    assert "12 credits" in added.output
    revoked = runner.invoke(app, ["keys", "revoke", created["id"]])
    assert revoked.exit_code == 0 and revoked.stdout.startswith("Revoked key")
    again = runner.invoke(app, ["keys", "revoke", created["id"]])
    assert again.exit_code == 0 and "was already revoked 20" in again.stdout
    listing = json.loads(runner.invoke(app, ["keys", "list", "--json"]).stdout)
    assert listing[0]["revokedAt"] is not None
    missing = runner.invoke(app, ["keys", "revoke", "nope"])
    assert missing.exit_code == 1


def test_first_start_creates_one_key_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "d", first_key_credits=42)
    key = serve_cli.first_start_key(settings)
    assert key is not None and key.startswith("uc_")
    assert serve_cli.first_start_key(settings) is None
    ctx = build_context(settings)
    assert keys.account_credits(ctx, keys.authenticate(ctx, key).account_id) == 42


def test_create_without_a_name_labels_the_key_with_its_day(app: typer.Typer) -> None:
    """docs/web.md tells people to run plain ``keys create``: it must work."""
    result = CliRunner().invoke(app, ["keys", "create", "--json"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"key-\d{4}-\d{2}-\d{2}", json.loads(result.stdout)["name"])


def test_credits_remove_and_short_prefixes(app: typer.Typer) -> None:
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--name", "c", "--credits", "25", "--json"])
    info = json.loads(created.stdout)
    short = info["prefix"][:7]
    too_many = runner.invoke(app, ["credits", "remove", short, "1000"])
    assert too_many.exit_code == 1 and "at most 25 can be removed" in too_many.output
    removed = runner.invoke(app, ["credits", "remove", short, "5"])
    assert removed.exit_code == 0 and "now has 20 credits" in removed.output
    revoked = runner.invoke(app, ["keys", "revoke", short])
    assert revoked.exit_code == 0 and info["id"] in revoked.output
    assert info["key"] not in revoked.output + removed.output + too_many.output


def test_commands_outside_the_servers_folder_do_not_start_a_database_silently(
    app: typer.Typer, tmp_path: Path
) -> None:
    """Run where no database is (another folder than the server's): reading
    or changing keys refuses and creates nothing; creating one says it starts
    a new database."""
    runner = CliRunner()
    database = (tmp_path / "data" / "upscayl.db").resolve()
    for command in (
        ["keys", "list"],
        ["keys", "revoke", "uc_d_Us"],
        ["credits", "add", "uc_d_Us", "5"],
        ["credits", "remove", "uc_d_Us", "5"],
        ["keys", "create", "--account", "acc_elsewhere"],
    ):
        refused = runner.invoke(app, command)
        assert refused.exit_code == 1, (command, refused.output)
        assert f"no database at {database}" in refused.output
        assert "UPSCAYL_DATA_DIR" in refused.output
    assert not (tmp_path / "data").exists()
    created = runner.invoke(app, ["keys", "create", "--credits", "3"])
    assert created.exit_code == 0, created.output
    assert f"Started a new database at {database}" in created.stderr
    assert created.stdout.strip().splitlines()[-1].startswith("uc_")
    again = runner.invoke(app, ["keys", "create"])
    assert "Started a new database" not in again.output
    assert "credits=3" in runner.invoke(app, ["keys", "list"]).stdout


def test_an_empty_key_list_says_how_to_make_one(app: typer.Typer) -> None:
    build_context(get_settings())  # a database, as a server's first start leaves it
    listed = CliRunner().invoke(app, ["keys", "list"])
    assert listed.exit_code == 0 and "No keys yet" in listed.stdout


def test_a_key_name_both_databases_store_is_required(
    app: typer.Typer, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Over 200 characters worked on SQLite and was a traceback on
    PostgreSQL (a String(200) column); bytes that are not UTF-8 (a terminal
    in another encoding; Python keeps them as surrogates) were a traceback on
    both. Refused before any database is opened."""
    monkeypatch.setenv("UPSCAYL_DATABASE_URL", database_url)
    get_settings.cache_clear()
    runner = CliRunner()
    for name, says in (
        ("x" * 201, "A key name is 1 to 200 characters long, not 201"),
        ("bad\udcffname", "A key name must be UTF-8 text"),
        ("two\nlines", "A key name cannot hold control characters"),
    ):
        refused = runner.invoke(app, ["keys", "create", "--name", name])
        assert refused.exit_code == 1, refused.output
        assert len(refused.output.strip().splitlines()) == 1
        assert refused.output.startswith(f"error: {says}")
        assert refused.exception is None or isinstance(refused.exception, SystemExit)
    assert not (tmp_path / "data").exists()
    longest = "é" * 200  # characters, not bytes
    created = runner.invoke(app, ["keys", "create", "--name", longest, "--json"])
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout.strip().splitlines()[-1])["name"] == longest
    listed = json.loads(runner.invoke(app, ["keys", "list", "--json"]).stdout)
    assert [info["name"] for info in listed] == [longest]


def test_a_sqlite_url_without_its_file_starts_no_database_silently(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative ``sqlite:///upscayl.db`` run from another folder than the
    server's: ``keys list`` made an empty database there and listed nothing,
    as the default data folder's did before it was guarded."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("UPSCAYL_DATABASE_URL", "sqlite:///upscayl.db")
    get_settings.cache_clear()
    runner = CliRunner()
    database = elsewhere / "upscayl.db"
    refused = runner.invoke(app, ["keys", "list"])
    assert refused.exit_code == 1, refused.output
    assert refused.output.startswith(f"error: no database at {database}: ")
    assert list(elsewhere.iterdir()) == []
    created = runner.invoke(app, ["keys", "create", "--name", "here"])
    assert created.exit_code == 0, created.output
    assert f"Started a new database at {database}" in created.stderr
    assert "UPSCAYL_DATABASE_URL picks one" in created.stderr
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0 and "'here'" in listed.stdout
