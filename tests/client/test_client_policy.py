"""The retry and polling decisions on their own (pure functions, no server)."""

from __future__ import annotations

import time
from email.utils import formatdate
from itertools import islice

import httpx
import pytest

from upscayl_cloud.client import PollSchedule, RetryPolicy
from upscayl_cloud.client._core import retry_after_of, status_delay, transport_delay
from upscayl_cloud.client.files import sniff

POLICY = RetryPolicy(backoff_base=1, backoff_cap=4, max_retry_after=60)


@pytest.mark.parametrize(
    ("exc", "idempotent", "retried"),
    [
        (httpx.ConnectError("refused"), False, True),  # never reached the server
        (httpx.WriteError("broken pipe"), False, True),  # request never complete
        (httpx.ReadTimeout("slow"), True, True),
        (httpx.ReadTimeout("slow"), False, False),  # start-task may exist already
        (httpx.RemoteProtocolError("hung up"), False, False),
    ],
)
def test_transport_failures(exc: Exception, idempotent: bool, retried: bool) -> None:
    assert (transport_delay(POLICY, 0, idempotent, exc) is not None) is retried


@pytest.mark.parametrize(
    ("status", "idempotent", "retried"),
    [(500, True, True), (500, False, False), (502, False, False), (503, False, True),
     (504, True, True), (400, True, False), (404, True, False), (429, False, True)],
)  # fmt: skip
def test_statuses(status: int, idempotent: bool, retried: bool) -> None:
    response = httpx.Response(status, headers={"retry-after": "2"})
    assert (status_delay(POLICY, 0, idempotent, response) is not None) is retried


def test_retry_after_is_honoured_or_refused() -> None:
    assert 2 <= POLICY.rate_limit_wait(2, 0) <= 2.25  # type: ignore[operator]
    assert POLICY.rate_limit_wait(3600, 0) is None  # an hourly limit: raise, don't sleep
    assert all(0 <= POLICY.backoff(n) <= 4 for n in range(10))
    date = formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_of(httpx.Response(429, headers={"retry-after": date})) <= 30  # type: ignore[operator]
    assert retry_after_of(httpx.Response(429, headers={"retry-after": "soon"})) is None


def test_a_503_waits_its_retry_after() -> None:
    response = httpx.Response(503, headers={"retry-after": "5"})
    assert all(status_delay(POLICY, 0, False, response) >= 5 for _ in range(20))  # type: ignore[operator]
    too_long = httpx.Response(503, headers={"retry-after": "3600"})
    assert status_delay(POLICY, 0, True, too_long) is None


@pytest.mark.parametrize("field", ["attempts", "backoff_base", "max_retry_after"])
def test_a_policy_that_cannot_work_is_refused_when_made(field: str) -> None:
    """attempts=0 used to fail at the first call, with an AssertionError."""
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**{field: 0 if field == "attempts" else -1})


def test_poll_schedule_slows_down_to_a_cap() -> None:
    assert list(islice(PollSchedule(0.5, 2, 3).delays(), 4)) == [0.5, 1, 2, 3]


def test_sniff() -> None:
    assert sniff(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert sniff(b"GIF89a") is None
