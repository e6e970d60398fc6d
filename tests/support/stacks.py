"""The two stacks the end-to-end tests run on, as server settings.

* ``embedded``: SQLite + local folder store + in-memory rate limits;
* ``scaleout``: PostgreSQL + SeaweedFS (S3, a fresh bucket per server) + Redis,
  from the session's throwaway servers (``tests/conftest.py``).
"""

from __future__ import annotations

import uuid

import pytest

from support.server import Server


def stack_env(request: pytest.FixtureRequest, stack: str) -> dict[str, object]:
    """Settings that put a server on ``stack`` (empty for the embedded one)."""
    if stack == "embedded":
        return {}
    database_url = request.getfixturevalue("postgres_server").new_database()
    s3 = request.getfixturevalue("seaweedfs")
    redis_url = request.getfixturevalue("redis_url")
    return {
        "database_url": database_url,
        "rate_limit_storage_uri": redis_url,
        "storage_backend": "s3",
        **{k.removeprefix("UPSCAYL_").lower(): v for k, v in s3.items()},
        "s3_bucket": f"e2e-{uuid.uuid4().hex[:12]}",
        "s3_create_bucket": "true",
    }


def on_s3(server: Server) -> bool:
    return server.env.get("UPSCAYL_STORAGE_BACKEND") == "s3"
