"""A throwaway PostgreSQL server for running the same tests on the scale-out
database. Used only where the ``postgres`` binaries and ``psycopg`` exist;
elsewhere the PostgreSQL variants of the tests are skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import Engine, text

from support.server import free_port


def available() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    if server_binary("initdb") is None or server_binary("pg_ctl") is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    return None


def server_binary(name: str) -> str | None:
    """``name`` on PATH, or in Debian's versioned folder (the postgresql
    package does not put initdb and pg_ctl on PATH), newest version first."""
    found = shutil.which(name)
    if found is not None:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
        reverse=True,
    )
    return str(candidates[0]) if candidates else None


class Postgres:
    """initdb + pg_ctl in a temporary folder, on a free loopback port."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="upscayl-pg-"))
        self.port = free_port()
        # PostgreSQL refuses to run as root; drop to nobody when we are root.
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "nobody")
            self._as = ["runuser", "-u", "nobody", "--"]

    def _run(self, program: str, *args: str) -> None:
        binary = server_binary(program) or program
        subprocess.run([*self._as, binary, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> Postgres:
        data = str(self.folder / "db")
        self._run("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-k {self.folder} -p {self.port} -h 127.0.0.1 -F"
        self._run(
            "pg_ctl", "-D", data, "-o", options, "-l", str(self.folder / "log"), "-w", "start"
        )
        return self

    def restart(self) -> None:
        """A fast restart (open connections are cut), as after a failover or upgrade."""
        log = str(self.folder / "log")  # without -l the server would hold our pipe open
        self._run("pg_ctl", "-D", str(self.folder / "db"), "-l", log, "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "db"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        base = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


def until_a_lock_is_awaited(db: Engine, what: str) -> None:
    """On PostgreSQL, until a backend waits for a lock (``what``, e.g. the
    second of two requests): one that does not wait never shows up, and this
    fails after 30 s saying ``what`` never waited. SQLite shows no waiter (its
    BEGIN IMMEDIATE waits in the driver), and every write transaction there
    is exclusive anyway: a short pause stands in."""
    if db.dialect.name != "postgresql":
        time.sleep(0.3)
        return
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    deadline = time.monotonic() + 30
    with db.connect() as conn:
        while not conn.execute(waiting).scalar():
            assert time.monotonic() < deadline, f"{what} never waited for a lock"
            conn.rollback()  # pg_stat_activity is read once per transaction
            time.sleep(0.02)
