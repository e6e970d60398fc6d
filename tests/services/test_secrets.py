"""Every process of a database signs with one secret, checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from upscayl_cloud.cli import keys as keys_cli
from upscayl_cloud.config import Settings, get_settings
from upscayl_cloud.services.context import build_context
from upscayl_cloud.services.secrets import SecretMismatchError


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
    monkeypatch.setenv("UPSCAYL_SECRET_KEYS", "zero")
    get_settings.cache_clear()
    assert CliRunner().invoke(cli, ["keys", "create"]).exit_code == 0  # records nothing
    _start(get_settings(), "one")  # the service starts with the real secret
    for secret, code in (("one", 0), ("two", 1)):
        monkeypatch.setenv("UPSCAYL_SECRET_KEYS", secret)
        get_settings.cache_clear()
        result = CliRunner().invoke(cli, ["keys", "list"])
        assert result.exit_code == code, result.output
    get_settings.cache_clear()
    assert result.output.startswith("Cannot start: this machine's signing secret is not")
    assert "Traceback" not in result.output and "two" not in result.output
