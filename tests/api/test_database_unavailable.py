"""A database that cannot be reached is a clean 503 in the spec's error shape."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import exc as sa_exc

from upscayl_cloud.api import deps
from upscayl_cloud.db.engine import database_unavailable


def _down(*_args: object) -> None:
    raise sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def test_unreachable_database_gives_503_with_retry_after(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deps, "authenticate", _down)
    response = client.post("/get-upscayl-history", headers={"X-API-Key": "uc_x"}, json={})
    assert response.status_code == 503
    assert response.json() == {
        "error": "SERVICE_UNAVAILABLE",
        "message": "The service is temporarily unavailable; retry shortly",
    }
    assert int(response.headers["Retry-After"]) > 0


def test_only_connection_failures_count_as_unavailable() -> None:
    assert database_unavailable(sa_exc.OperationalError("x", {}, OSError("gone")))
    assert database_unavailable(sa_exc.InterfaceError("x", {}, OSError("closed")))
    assert not database_unavailable(sa_exc.IntegrityError("x", {}, ValueError("dup")))
    assert not database_unavailable(ValueError("bug"))
