"""``serve``'s process setup."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from support.redisproc import redis_process
from support.server import Server, free_port
from upscayl_cloud.cli.serve import listen_problem, url_host

# A child process with a soft limit of 64 under a hard limit of 1000 (lowering
# a hard limit needs no privilege, so this runs wherever the test does).
_CHILD = """
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 1000))
from upscayl_cloud.cli.serve import raise_descriptor_limit
print(raise_descriptor_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))
"""

_CLI = "from upscayl_cloud.cli import app; app()"


def test_serve_lifts_the_open_file_limit_to_the_hard_limit() -> None:
    """A soft limit of 64 would refuse the 60th client; serve takes all it may."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True
    ).stdout.split()
    returned, soft, hard = (int(v) for v in out)
    assert returned == soft == hard == 1000


def test_a_worker_whose_metrics_port_is_taken_says_so_and_stops(tmp_path: Path) -> None:
    """Before claiming any task: a worker nobody can observe is a surprise
    found later, the port's owner unknown. And a worker that creates the
    database (started in another folder than the server's, it would wait
    for tasks nobody can send it) says so, once."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runs = [
            subprocess.run(
                [sys.executable, "-c", _CLI, "worker", "--metrics-port", str(port)],
                env={**os.environ, "UPSCAYL_DATA_DIR": str(tmp_path / "data")},
                capture_output=True,
                text=True,
                timeout=120,
            )
            for _ in range(2)
        ]
    for done in runs:
        assert done.returncode == 1  # as serve's own port taken
        assert f"Cannot serve worker metrics on 127.0.0.1:{port}: Address already in use" in (
            done.stderr
        )
        assert "Traceback" not in done.stderr
        assert "Worker running" not in done.stdout
    database = (tmp_path / "data" / "upscayl.db").resolve()
    first_note = " ".join(runs[0].stderr.split())
    assert f"note: no database at {database} yet" in first_note
    assert "set UPSCAYL_DATA_DIR as the server has it" in first_note
    assert "note:" not in runs[1].stderr


def test_a_worker_creating_the_database_its_url_names_says_which_setting_chooses(
    tmp_path: Path,
) -> None:
    """The note told to set UPSCAYL_DATA_DIR, which does not choose the
    database when UPSCAYL_DATABASE_URL names one."""
    database = tmp_path / "elsewhere.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = subprocess.run(
            [sys.executable, "-c", _CLI, "worker", "--metrics-port", str(taken.getsockname()[1])],
            env={
                **os.environ,
                "UPSCAYL_DATA_DIR": str(tmp_path / "data"),
                "UPSCAYL_DATABASE_URL": f"sqlite:///{database}",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
    note = " ".join(done.stderr.split())
    assert f"note: no database at {database.resolve()} yet" in note
    assert "set UPSCAYL_DATABASE_URL as the server has it" in note


def test_serve_says_where_the_web_page_is(tmp_path: Path) -> None:
    running = Server(tmp_path / "data", workers=0).start()
    try:
        assert f"Web page: {running.url}/ " in running.log()
        page = httpx.get(running.url + "/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    finally:
        running.stop()


def test_a_port_in_use_is_one_line_before_anything_is_created(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "UPSCAYL_DATA_DIR": str(tmp_path / "data")}
        result = subprocess.run(
            [sys.executable, "-c", _CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        f"Cannot listen on 127.0.0.1:{port}: Address already in use (another server "
        "running?); --port or UPSCAYL_PORT picks another port"
    ), result.stderr
    assert "Serving" not in result.stdout and "API key" not in result.stdout
    assert not (tmp_path / "data" / "upscayl.db").exists()


@dataclass
class _Served:
    """A ``serve`` child process, its banner's "Serving" line, and what it
    wrote to stdout and stderr after that (once it has stopped)."""

    process: subprocess.Popen[str]
    serving: str
    out: str = ""
    err: str = ""


@contextlib.contextmanager
def _serving_on_any_port(
    tmp_path: Path, stderr: int = subprocess.DEVNULL, **variables: str
) -> Iterator[_Served]:
    """``serve --port 0`` in a child process (no workers); stopped on the way
    out, its remaining output read while it exits (a full pipe would block it)."""
    env = {**os.environ, "UPSCAYL_DATA_DIR": str(tmp_path / "data"), "UPSCAYL_WORKERS": "0"}
    process = subprocess.Popen(
        [sys.executable, "-c", _CLI, "serve", "--host", "127.0.0.1", "--port", "0"],
        env={**env, **variables}, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )  # fmt: skip
    served = _Served(process, "")
    try:
        assert process.stdout is not None
        served.serving = next(line for line in process.stdout if line.startswith("Serving"))
        yield served
    finally:
        process.terminate()
        served.out, served.err = process.communicate(timeout=30)
        served.err = served.err or ""


def _get_once_up(process: subprocess.Popen[str], url: str, **options: Any) -> httpx.Response:
    """``GET url`` as soon as the server answers (it binds after its banner)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return httpx.get(url, **options)
        except httpx.TransportError:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)


def test_port_0_serves_on_a_free_port_the_banner_names(tmp_path: Path) -> None:
    """Not "on http://127.0.0.1:0", which nobody can open."""
    with _serving_on_any_port(tmp_path) as served:
        url = served.serving.split(" on ")[1].split()[0]
        assert int(url.rsplit(":", 1)[1]) > 0
        assert _get_once_up(served.process, url + "/healthz").status_code == 200


def _ipv6_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_the_port_check_binds_as_uvicorn_does() -> None:
    """Only a real clash is refused: "" is every interface (as asyncio takes
    it), and an IPv6 listener beside an IPv4 server on the same port is none
    (asyncio makes IPv6 sockets IPv6-only)."""
    with socket.socket() as ipv4:
        ipv4.bind(("127.0.0.1", 0))
        ipv4.listen()
        port = ipv4.getsockname()[1]
        assert listen_problem("127.0.0.1", port) is not None
        if _ipv6_works():
            assert listen_problem("::", port) is None
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        free = spare.getsockname()[1]
    assert listen_problem("", free) is None
    unknown = listen_problem("no-such-host.invalid", free)
    assert unknown is not None and "another server" not in unknown
    # An address of another machine (TEST-NET-1): asyncio skips it, and then
    # has nothing to listen on; said before a first start's key is printed.
    foreign = listen_problem("192.0.2.1", free)
    assert foreign is not None and "this machine has no such address" in foreign


def test_migrate_says_what_it_did(tmp_path: Path) -> None:
    """Created, upgraded from an older revision, or already up to date."""
    from alembic import command
    from alembic.script import ScriptDirectory
    from typer.testing import CliRunner

    from upscayl_cloud.cli import app
    from upscayl_cloud.db.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'upscayl.db'}"
    config = alembic_config(url)
    head = ScriptDirectory.from_config(config).get_current_head()
    env = {"UPSCAYL_DATA_DIR": str(tmp_path), "UPSCAYL_DATABASE_URL": url}

    def migrate() -> str:
        result = CliRunner().invoke(app, ["migrate"], env=env)
        assert result.exit_code == 0, result.output
        return result.output.strip()

    assert migrate() == f"Database schema created (revision {head})"
    assert migrate() == f"Database schema is up to date (revision {head})"
    command.downgrade(config, "-1")
    previous = ScriptDirectory.from_config(config).get_revision(head).down_revision
    assert migrate() == f"Database schema upgraded from revision {previous} to {head}"
    # Migrated by a newer release (a rolling upgrade): this one carries on, as
    # migrations only add; Alembic stopped it with "Can't locate revision".
    from sqlalchemy import create_engine, text

    newer = create_engine(url)
    with newer.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_later'"))
    newer.dispose()
    assert migrate().endswith(
        f"Database schema is at revision 9999_from_later, newer than this release's {head}: "
        "left as it is"
    )


def test_an_ipv6_host_is_bracketed_in_the_urls_shown() -> None:
    assert url_host("::1") == "[::1]" and url_host("127.0.0.1") == "127.0.0.1"
    assert url_host("localhost") == "localhost"


def test_access_lines_are_logged_as_every_other_line(tmp_path: Path) -> None:
    """uvicorn's own format went to stdout, without time or request id; a
    signed link's signature is still cut from them."""
    with _serving_on_any_port(tmp_path, stderr=subprocess.PIPE) as served:
        url = served.serving.split(" on ")[1].split()[0]
        headers = {"X-Request-ID": "trace-xyz"}
        missing = _get_once_up(served.process, url + "/nope", headers=headers)
        assert missing.status_code == 404
        httpx.get(url + "/objects/a/b.png?method=GET&expires=1&signature=f00dfeed")
        # Starlette reads a percent-encoded name as the name itself.
        httpx.get(url + "/objects/a/b.png?method=GET&expires=1&sig%6Eature=cafebabe")
    out, err = served.out, served.err
    access = [line for line in err.splitlines() if '"GET /nope HTTP/1.1" 404' in line]
    assert len(access) == 1 and " INFO uvicorn.access [trace-xyz] " in access[0], err
    assert "f00dfeed" not in err and "signature=[redacted]" in err
    assert "cafebabe" not in err and "sig%6Eature=[redacted]" in err
    assert "HTTP/1.1" not in out


def test_behind_a_public_url_the_banner_names_the_port_listened_on(tmp_path: Path) -> None:
    """With UPSCAYL_PUBLIC_URL the banner named only that URL: the port
    --port 0 took was nowhere but in uvicorn's own line."""
    public = {"UPSCAYL_PUBLIC_URL": "https://up.example.org/pre"}
    with _serving_on_any_port(tmp_path, **public) as served:
        banner = "Serving the Upscayl Cloud API on https://up.example.org/pre "
        assert served.serving.startswith(banner)
        local = served.serving.split("listening on ")[1].rstrip(")\n")
        assert local.startswith("http://127.0.0.1:") and int(local.rsplit(":", 1)[1]) > 0
        assert _get_once_up(served.process, local + "/healthz").status_code == 200


def test_the_service_logs_keep_client_text_on_its_line(caplog: Any) -> None:
    """configure_logging() gives every handler the escaping filter (a path
    with %0A in it forged a second log line through the 408 warning)."""
    import logging

    from upscayl_cloud.cli.serve import configure_logging

    root = logging.getLogger()
    before = {handler: list(handler.filters) for handler in root.handlers}
    try:
        configure_logging()
        logging.getLogger("upscayl_cloud.test").warning("408 for %s", "/x\nFORGED line")
    finally:
        for handler, filters in before.items():
            handler.filters[:] = filters
    assert caplog.records[-1].getMessage() == "408 for /x\\nFORGED line"


def test_a_redis_refusing_its_password_stops_serve_in_one_line(tmp_path: Path) -> None:
    """A wrong password left the API serving with no limits at all, a
    warning per request its only sign; now serve stops before anything is
    created, and never shows the password."""
    with redis_process(tmp_path / "redis", "--requirepass", "right-password") as port:
        env = {
            **os.environ,
            "UPSCAYL_DATA_DIR": str(tmp_path / "data"),
            "UPSCAYL_RATE_LIMIT_STORAGE_URI": f"redis://:wrong-password@127.0.0.1:{port}",
        }
        result = subprocess.run(
            [sys.executable, "-c", _CLI, "serve", "--host", "127.0.0.1", "--port", "0"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    said = [line for line in result.stderr.splitlines() if "Cannot start" in line]
    assert said == [
        f"Cannot start: the rate-limit storage redis://127.0.0.1:{port} refused its "
        "credentials (a wrong or missing password in the URI): AuthenticationError: "
        "invalid username-password pair or user is disabled; fix "
        "UPSCAYL_RATE_LIMIT_STORAGE_URI, or set UPSCAYL_RATE_LIMITS_ENABLED=false to run "
        "without limits"
    ], result.stderr
    assert "Traceback" not in result.stderr and "wrong-password" not in result.stderr
    assert "Serving" not in result.stdout and "API key" not in result.stdout
    assert not (tmp_path / "data" / "upscayl.db").exists()


def test_a_redis_out_of_reach_is_warned_of_and_serve_starts(tmp_path: Path) -> None:
    """An outage of Redis is let through by design: at start as later."""
    uri = f"redis://127.0.0.1:{free_port()}"  # nothing listens there
    variables = {"UPSCAYL_RATE_LIMIT_STORAGE_URI": uri}
    with _serving_on_any_port(tmp_path, stderr=subprocess.PIPE, **variables) as served:
        url = served.serving.split(" on ")[1].split()[0]
        assert _get_once_up(served.process, url + "/healthz").status_code == 200
    assert f"WARNING upscayl_cloud.cli.serve [-] the rate-limit storage {uri} cannot be " in (
        served.err
    ), served.err
    assert "starting anyway" in served.err
