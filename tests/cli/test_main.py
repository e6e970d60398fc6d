"""The ``upscayl-cloud`` command's own checks, before any subcommand runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from upscayl_cloud.cli import app

pytestmark = pytest.mark.usefixtures("fresh_settings")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("UPSCAYL_PORT", "abc", "valid integer"),
        ("UPSCAYL_WORKERS", "-1", "greater than or equal to 0"),
        ("UPSCAYL_STORAGE_BACKEND", "s4", "'local' or 's3'"),
        # Unbounded, these crashed later: ncnn's thread pool, the sweeper's
        # timer, an S3 link beyond SigV4's week, a first key's credits.
        ("UPSCAYL_ENGINE_THREADS", "100000", "less than or equal to 256"),
        ("UPSCAYL_LEASE_SECONDS", "inf", "finite number"),
        ("UPSCAYL_SWEEP_INTERVAL_SECONDS", "1e10", "less than or equal to 86400"),
        ("UPSCAYL_UPLOAD_URL_TTL_SECONDS", "100000000000000000000", "604800"),
        ("UPSCAYL_FIRST_KEY_CREDITS", str(2**63), "less than or equal to"),
        ("UPSCAYL_PUBLIC_URL", "upscale.example.org", "http:// or https:// URL"),
        ("UPSCAYL_PUBLIC_URL", "https://admin:hunter2@up.example.org", "no query, fragment"),
        ("UPSCAYL_DATABASE_URL", "sqlite:/relative", "not a database URL"),
        ("UPSCAYL_RATE_LIMITS", '{"start_task": "5/minute"}', "unknown operation 'start_task'"),
        ("UPSCAYL_RATE_LIMITS", '{"start-task": "5/fortnight"}', "is not a limit"),
        ("UPSCAYL_RATE_LIMIT_STORAGE_URI", "memcached://127.0.0.1", "moving windows"),
        # These passed, and ``serve`` crashed after its banner (exit 3).
        ("UPSCAYL_RATE_LIMIT_STORAGE_URI", "redis://:s3cret-pw@localhost:notaport", "'notaport'"),
        ("UPSCAYL_RATE_LIMIT_STORAGE_URI", "redis+sentinel://localhost:26379", "service_name"),
        ("UPSCAYL_RATE_LIMITS", '{"start-task": "5 per 0 minute"}', "is not a limit"),
        ("UPSCAYL_DATABASE_URL", "sqlite:///:memory:", "in-memory SQLite database"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    """It was a 60-line traceback ending in the field's name, not the variable's."""
    monkeypatch.setenv(variable, value)
    result = CliRunner().invoke(app, ["keys", "list"])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    if variable.endswith(("_URL", "_URI")):  # may hold a password: not repeated
        assert result.output.startswith(f"Invalid setting {variable}: ")
        assert value not in result.output
    elif variable == "UPSCAYL_RATE_LIMITS":  # repeated as read: parsed JSON
        assert result.output.startswith(f"Invalid setting {variable}={{")
    else:
        assert result.output.startswith(f"Invalid setting {variable}={value!r}: ")
    assert len(result.output.strip().splitlines()) == 1
    assert says in result.output
    assert "Traceback" not in result.output and "s3cret" not in result.output


def test_a_setting_that_is_not_valid_json_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic-settings raises its own SettingsError for these, not a ValidationError."""
    monkeypatch.setenv("UPSCAYL_RATE_LIMITS", "{bad")
    result = CliRunner().invoke(app, ["keys", "list"])
    assert result.exit_code == 2
    assert result.output.startswith("Invalid setting UPSCAYL_RATE_LIMITS: not valid JSON (")
    assert len(result.output.strip().splitlines()) == 1


def test_settings_that_only_fail_together_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSCAYL_STORAGE_BACKEND", "s3")
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Invalid settings: UPSCAYL_S3_BUCKET is required when UPSCAYL_STORAGE_BACKEND=s3"
    )


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        (
            {"UPSCAYL_S3_REGION": "eu west 1"},
            "Invalid setting UPSCAYL_S3_REGION='eu west 1': not an S3 region; write its name, "
            "such as us-east-1 or eu-west-1 (letters, digits and dashes; SeaweedFS and MinIO "
            "accept us-east-1)",
        ),
        (
            {"UPSCAYL_S3_ACCESS_KEY_ID": "AKIDEXAMPLE"},
            "Invalid settings: UPSCAYL_S3_ACCESS_KEY_ID and UPSCAYL_S3_SECRET_ACCESS_KEY go "
            "together: set both, or neither to use boto3's usual chain (environment, ~/.aws, "
            "role)",
        ),
    ],
)
def test_s3_settings_botocore_refuses_are_one_line(
    monkeypatch: pytest.MonkeyPatch, setting: dict[str, str], says: str
) -> None:
    """Each was a traceback of 120-150 lines from every command."""
    for name, value in {
        "UPSCAYL_STORAGE_BACKEND": "s3",
        "UPSCAYL_S3_BUCKET": "photos",
        "UPSCAYL_S3_REGION": "eu-west-1",
        **setting,
    }.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["keys", "list"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [says]


def test_a_settings_file_that_is_not_text_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """pydantic-settings reads ``.env`` as UTF-8; a Latin-1 one was a long
    traceback ending in UnicodeDecodeError."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes(b"UPSCAYL_WORKERS=1\n# caf\xe9\n")
    result = CliRunner().invoke(app, ["keys", "list"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Cannot read the settings file {tmp_path / '.env'}: not utf-8 text "
        "(byte 0xe9 at offset 23)"
    ]


def test_client_commands_do_not_need_the_servers_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client talks to a server elsewhere: a bad server setting in the
    same shell must not stop it."""
    monkeypatch.setenv("UPSCAYL_PORT", "abc")
    result = CliRunner().invoke(app, ["client", "--help"])
    assert result.exit_code == 0, result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert re.fullmatch(r"upscayl-cloud \d+\.\d+\.\d+\S*\n", result.output)


def test_help_fits_docstrings_to_the_terminal_and_shows_no_markup() -> None:
    """Docstrings keep their source line breaks out of ``--help`` (a sentence
    broke mid-way), and their double backquotes."""
    result = CliRunner(env={"COLUMNS": "140"}).invoke(app, ["models", "--help"])
    assert result.exit_code == 0
    assert "the installed face models, and whether face enhancement is available" in result.output
    assert "``" not in result.output and "UPSCAYL_ENGINE_BACKEND" in result.output
    # Markdown takes <...> for a tag: help text must not use it for a placeholder.
    create = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["keys", "create", "--help"])
    assert "Default: key-YYYY-MM-DD (today, UTC)." in create.output


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        (["upscale"], ["--recursive", "--cpu"]),
        (["models", "list"], ["--json"]),
        (["models", "backends"], ["--json"]),
        (["models", "add"], ["--replace"]),
        (["client", "upscale"], ["--recursive", "--face", "--thumbnails"]),
        (["client", "status"], ["--json"]),
        (["client", "history"], ["--failed", "--json"]),
        (["keys", "create"], ["--json"]),
        (["keys", "list"], ["--json"]),
    ],
)
def test_flags_show_no_value_in_help(command: list[str], flags: list[str]) -> None:
    """Typer 0.29 showed ``--recursive -r <bool>``, as if ``-r true`` were
    meant (``true`` was then taken for a file to upscale). A flag's row has
    no value (``--help``'s own row is typer's)."""
    shown = CliRunner(env={"COLUMNS": "200"}).invoke(app, [*command, "--help"])
    assert shown.exit_code == 0, shown.output
    rows = {line.split()[1]: line for line in shown.output.splitlines() if line.startswith("│ --")}
    for flag in flags:
        assert "<bool>" not in rows[flag], rows[flag]
