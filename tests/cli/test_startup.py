"""A database or object store that cannot be reached when a command starts:
one line saying which, the password never shown (it was ~475 lines of
traceback). Both are provoked for real: connections to loopback ports
nobody listens on are refused."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from support.context import make_settings
from upscayl_cloud.cli import app
from upscayl_cloud.cli.startup import open_context


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


pytestmark = pytest.mark.usefixtures("fresh_settings")


@pytest.mark.parametrize(
    "command", [["keys", "list"], ["keys", "create", "--name", "x"], ["worker"]]
)
def test_an_unreachable_database_is_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    port = _closed_port()
    url = f"postgresql+psycopg://upscayl:s3cret-pw@127.0.0.1:{port}/upscayl"
    monkeypatch.setenv("UPSCAYL_DATABASE_URL", url)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Cannot use the database postgresql+psycopg://upscayl:***@127.0.0.1:{port}/upscayl: "
        f'connection failed: connection to server at "127.0.0.1", port {port} failed: '
        "Connection refused"
    ]
    assert "s3cret-pw" not in result.output


def test_a_password_in_the_database_url_s_query_is_not_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libpq also takes the password as a parameter (``?password=``)."""
    port = _closed_port()
    url = f"postgresql+psycopg://upscayl@127.0.0.1:{port}/upscayl?password=s3cret-pw"
    monkeypatch.setenv("UPSCAYL_DATABASE_URL", url)
    result = CliRunner().invoke(app, ["keys", "list"])
    assert result.exit_code == 1
    assert result.output.startswith(
        f"Cannot use the database postgresql+psycopg://upscayl@127.0.0.1:{port}/upscayl: "
    )
    assert "s3cret-pw" not in result.output


def test_an_unreachable_object_store_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    for name, value in {
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "S3_BUCKET": "photos",
        "S3_CREATE_BUCKET": "true",
        "S3_ACCESS_KEY_ID": "key",
        "S3_SECRET_ACCESS_KEY": "secret-key",
    }.items():
        monkeypatch.setenv(f"UPSCAYL_{name}", value)
    result = CliRunner().invoke(app, ["keys", "create"])  # the one that may start a database
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Cannot reach the object store: bucket photos: store unavailable")
    assert f"127.0.0.1:{port}" in lines[0]
    assert "secret-key" not in result.output


def test_a_data_folder_that_is_a_file_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    blocker = tmp_path / "data"  # type: ignore[operator]
    blocker.write_text("not a folder")
    monkeypatch.setenv("UPSCAYL_DATA_DIR", str(blocker))
    for command in (["migrate"], ["worker"], ["keys", "create"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1, result.output
        assert result.output.strip().splitlines() == [
            f"Cannot use the data folder {blocker} (UPSCAYL_DATA_DIR): File exists ({blocker})"
        ]


def test_migrate_with_the_database_down_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """It was 451 lines: ``migrate`` opened the database on its own."""
    port = _closed_port()
    monkeypatch.setenv("UPSCAYL_DATABASE_URL", f"postgresql+psycopg://u:pw@127.0.0.1:{port}/d")
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Cannot use the database postgresql+psycopg://u:***@127.0.0.1:{port}/d: "
        f'connection failed: connection to server at "127.0.0.1", port {port} failed: '
        "Connection refused"
    ]


def test_a_bucket_name_s3_refuses_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused by botocore before any connection: no store is needed."""
    for name, value in {
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}",
        "S3_BUCKET": "Not_A_Bucket!",
        "S3_CREATE_BUCKET": "true",
        "S3_ACCESS_KEY_ID": "key",
        "S3_SECRET_ACCESS_KEY": "secret-key",
    }.items():
        monkeypatch.setenv(f"UPSCAYL_{name}", value)
    result = CliRunner().invoke(app, ["keys", "create"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Cannot use the object store: bucket Not_A_Bucket!")


def test_a_file_that_is_no_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "upscayl.db").write_text("hello\n")
    monkeypatch.setenv("UPSCAYL_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["keys", "list"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Cannot use the database sqlite:///{tmp_path}/upscayl.db: file is not a database"
    ]


def test_a_database_folder_that_does_not_exist_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("UPSCAYL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("UPSCAYL_DATABASE_URL", f"sqlite:///{tmp_path}/no/such/x.db")
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Cannot start: No such file or directory ({tmp_path}/no/such/x.db.migrate-lock)"
    ]


def test_a_database_driver_not_installed_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSCAYL_DATABASE_URL", "postgresql+psycopg2://u:pw@127.0.0.1/d")
    result = CliRunner().invoke(app, ["keys", "list"])
    assert result.exit_code == 2
    assert "its driver (psycopg2) is not installed" in result.output
    assert "Traceback" not in result.output


def test_an_s3_client_botocore_will_not_build_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The settings refuse these at start; settings built in code (a copy
    with an update is not validated) reach botocore, which raised from deep
    inside boto3: its error is the store's one line too."""
    valid = make_settings(
        tmp_path / "data", storage_backend="s3", s3_bucket="photos", s3_region="eu-west-1"
    )
    for bad in ({"s3_region": "eu west 1"}, {"s3_access_key_id": "AKIDEXAMPLE"}):
        with pytest.raises(typer.Exit) as stopped:
            open_context(valid.model_copy(update=bad))
        assert stopped.value.exit_code == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("Cannot use the object store: cannot build an S3 client: ")


def test_a_store_that_is_not_the_databases_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two local folders beside one SQLite file, as ``serve`` and ``worker``
    open them: the second is refused in one line naming both stores. The
    ``keys`` commands' contexts do not look (they never touch the store)."""
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    server = make_settings(tmp_path / "server", database_url=database)
    open_context(server, records_secret=True).db.dispose()
    capsys.readouterr()
    stray = make_settings(tmp_path / "stray", database_url=database)
    with pytest.raises(typer.Exit) as stopped:
        open_context(stray, records_secret=True)
    assert stopped.value.exit_code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"Cannot start: this process's object store is not the one the other processes of "
        f"this database use, so every file it handled would be missing: local folder "
        f"{stray.resolved_storage_dir} has no marker"
    )
    assert f"The database's store is local folder {server.resolved_storage_dir}." in lines[0]
    open_context(stray).db.dispose()  # as `keys list` opens it


def test_a_store_down_at_a_services_start_is_the_outage_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reading the store's marker meets the outage: the store's own line, not
    a refusal for a store that is not the database's."""
    down = make_settings(
        tmp_path / "data",
        storage_backend="s3",
        s3_bucket="photos",
        s3_endpoint_url=f"http://127.0.0.1:{_closed_port()}",
        s3_access_key_id="key",
        s3_secret_access_key="secret-key",
        s3_connect_timeout_seconds=1,
        s3_max_attempts=1,
    )
    with pytest.raises(typer.Exit) as stopped:
        open_context(down, records_secret=True)
    assert stopped.value.exit_code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Cannot reach the object store: upscayl-cloud-store-id: ")
    assert "secret-key" not in lines[0]
