"""Request ids: on every answer, and on every line logged while serving it."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from support.context import new_principal
from support.tasks import uploaded
from upscayl_cloud.api.requestid import RequestIdFilter
from upscayl_cloud.services import status


def test_every_answer_carries_an_id_and_a_callers_plain_one_is_kept(client: TestClient) -> None:
    first, second = client.get("/healthz"), client.post("/get-upscayl-history", json={})
    ids = {first.headers["X-Request-ID"], second.headers["X-Request-ID"]}
    assert len(ids) == 2 and all(len(i) == 16 for i in ids)  # made here, one per request
    assert second.status_code == 401  # refusals too
    kept = client.get("/healthz", headers={"X-Request-ID": "proxy-7f3a.1"})
    assert kept.headers["X-Request-ID"] == "proxy-7f3a.1"
    # Written into logs: anything but a short plain token is replaced.
    for unsafe in (b"two words", b"a" * 65, "caf\u00e9".encode(), b"x\x7fy"):
        answered = client.get("/healthz", headers={"X-Request-ID": unsafe}).headers
        assert len(answered["X-Request-ID"]) == 16 and answered["X-Request-ID"].isalnum()


def test_lines_logged_while_serving_show_the_id(
    client: TestClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line logged by a service the route runs in a worker thread
    (run_in_threadpool) carries the request's id; one outside, ``-``."""
    real_history = status.history

    def logged_history(*args: Any, **kwargs: Any) -> Any:
        logging.getLogger("upscayl_cloud.test").info("reading the history")
        return real_history(*args, **kwargs)

    monkeypatch.setattr(status, "history", logged_history)
    key = new_principal(client.app.state.ctx)[0]
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO, logger="upscayl_cloud.test"):
        answer = client.post(
            "/get-upscayl-history", json={}, headers={"X-API-Key": key, "X-Request-ID": "trace-1"}
        )
        logging.getLogger("upscayl_cloud.test").info("outside any request")
    assert answer.status_code == 200 and answer.headers["X-Request-ID"] == "trace-1"
    ids = {r.getMessage(): getattr(r, "request_id", None) for r in caplog.records}
    assert ids == {"reading the history": "trace-1", "outside any request": "-"}


def test_a_started_task_is_logged_under_the_requests_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """start-task logged nothing: a caller's id for it led to no task id,
    which is what the worker's lines name."""
    ctx = client.app.state.ctx
    key, who = new_principal(ctx)
    name = uploaded(ctx, who)
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO, logger="upscayl_cloud.services.tasks"):
        answer = client.post(
            "/start-task",
            data={"model": "quick-clear-4x"},
            files={"files": (None, json.dumps([{"fileName": name}]), "application/json")},
            headers={"X-API-Key": key, "X-Request-ID": "start-1"},
        )
    assert answer.status_code == 200, answer.text
    task_id = answer.json()["data"]["taskId"]
    started = [r for r in caplog.records if r.getMessage().startswith(f"task {task_id} started")]
    assert [getattr(r, "request_id", None) for r in started] == ["start-1"]
