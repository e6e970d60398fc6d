"""Rate limits per key and per operation, with their headers."""

from __future__ import annotations

from support.app import client_for
from support.context import make_settings, new_principal
from upscayl_cloud.api.ratelimit import RateLimits


def test_limit_is_per_key_and_operation(tmp_path) -> None:
    settings = make_settings(tmp_path, rate_limits={"get-upscayl-history": "2/minute"})
    with client_for(settings) as client:
        ctx = client.app.state.ctx
        first, second = new_principal(ctx)[0], new_principal(ctx, name="b")[0]
        ok = [
            client.post("/get-upscayl-history", json={}, headers={"X-API-Key": first})
            for _ in range(2)
        ]
        assert [r.status_code for r in ok] == [200, 200]
        assert ok[1].headers["X-RateLimit-Remaining"] == "0"
        assert ok[1].headers["RateLimit-Policy"] == '"get-upscayl-history";q=2;w=60'
        refused = client.post("/get-upscayl-history", json={}, headers={"X-API-Key": first})
        assert refused.status_code == 429
        assert refused.json()["error"] == "RATE_LIMIT_EXCEEDED"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["X-RateLimit-Limit"] == "2"
        other_key = client.post("/get-upscayl-history", json={}, headers={"X-API-Key": second})
        assert other_key.status_code == 200
        other_op = client.post(
            "/get-task-status",
            json={"taskId": "00000000-0000-4000-8000-000000000000"},
            headers={"X-API-Key": first},
        )
        assert other_op.status_code == 404


def test_what_counts_against_the_limit(tmp_path) -> None:
    """docs/api.md, "What counts": refusals with a valid key count, a 401
    does not. (That a 429 takes no slot is the moving window's own rule:
    ``limits`` records no hit it refuses.)"""
    settings = make_settings(tmp_path, rate_limits={"get-task-status": "3/minute"})
    with client_for(settings) as client:
        key = new_principal(client.app.state.ctx)[0]
        unknown = {"taskId": "00000000-0000-4000-8000-000000000000"}
        for _ in range(5):
            anonymous = client.post("/get-task-status", json=unknown)
            assert anonymous.status_code == 401
        malformed = client.post("/get-task-status", json={"taskId": 7}, headers={"X-API-Key": key})
        assert malformed.status_code == 400
        assert malformed.headers["X-RateLimit-Remaining"] == "2"
        missing = client.post("/get-task-status", json=unknown, headers={"X-API-Key": key})
        assert missing.status_code == 404 and missing.headers["X-RateLimit-Remaining"] == "1"
        client.post("/get-task-status", json=unknown, headers={"X-API-Key": key})
        refusals = [
            client.post("/get-task-status", json=unknown, headers={"X-API-Key": key})
            for _ in range(3)
        ]
        assert [r.status_code for r in refusals] == [429] * 3


def test_bodies_that_never_parse_count_too(tmp_path) -> None:
    """FastAPI parses a JSON body before any dependency runs: broken JSON,
    a body that is not UTF-8 and one over the 1 MiB cap are still asked for
    a key (401 without one) and counted, so looping on them hits the limit."""
    settings = make_settings(tmp_path, rate_limits={"get-upload-url": "3/minute"})
    with client_for(settings) as client:
        key = new_principal(client.app.state.ctx)[0]
        json_type = {"Content-Type": "application/json"}
        anonymous = client.post("/get-upload-url", content=b"{", headers=json_type)
        assert anonymous.status_code == 401, anonymous.text
        keyed = {**json_type, "X-API-Key": key}
        bodies = [b"{", b'{"originalFileName": "\xff"}', b"{" + b" " * (1 << 20) + b"}"]
        answers = [client.post("/get-upload-url", content=b, headers=keyed) for b in bodies]
        assert [r.status_code for r in answers] == [400, 400, 400]
        assert [r.headers.get("X-RateLimit-Remaining") for r in answers] == ["2", "1", "0"]
        assert "not valid UTF-8" in answers[1].json()["message"]
        refused = client.post("/get-upload-url", content=b"{", headers=keyed)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1


def test_spec_defaults(tmp_path) -> None:
    limits = RateLimits(make_settings(tmp_path))
    headers, refusal = limits.check("start-task", "k")
    assert refusal is None and headers["X-RateLimit-Limit"] == "50"
    assert limits.check("get-upload-url", "k")[0]["X-RateLimit-Limit"] == "100"


def test_can_be_disabled(tmp_path) -> None:
    limits = RateLimits(make_settings(tmp_path, rate_limits_enabled=False))
    assert limits.check("start-task", "k") == ({}, None)


def test_storage_is_configurable(tmp_path) -> None:
    limits = RateLimits(make_settings(tmp_path, rate_limit_storage_uri="memory://"))
    assert limits.check("start-task", "k")[1] is None


def test_unreachable_counter_storage_lets_requests_through(tmp_path) -> None:
    """Redis down must not take the API down: no limit, no headers, a warning."""
    from limits.storage import MemoryStorage

    class Down(MemoryStorage):
        def acquire_entry(self, *args: object, **kwargs: object) -> bool:
            raise ConnectionError("redis is gone")

    limits = RateLimits(make_settings(tmp_path), storage=Down())
    assert limits.check("start-task", "k") == ({}, None)


def test_a_refusal_stands_when_the_storage_fails_after_counting(tmp_path) -> None:
    """The count and the window's stats shared one guard: a storage lost
    between them let an over-limit request through. The storage that fails
    only its second call is a stand-in (Redis cannot be made to fail there)."""
    from limits.storage import MemoryStorage

    class LostAfterCounting(MemoryStorage):
        def get_moving_window(self, *args: object, **kwargs: object) -> tuple[float, int]:
            raise ConnectionError("redis is gone")

    settings = make_settings(tmp_path, rate_limits={"start-task": "1/hour"})
    limits = RateLimits(settings, storage=LostAfterCounting())
    assert limits.check("start-task", "k") == ({}, None)
    headers, refusal = limits.check("start-task", "k")
    assert headers == {} and refusal is not None
    assert (refusal.retry_after_seconds, refusal.public_message) == (
        60,
        "Too many requests: 1 per 3600 seconds for start-task. Try again in 60 seconds",
    )


def test_counters_in_memory_beside_a_shared_database_are_warned_of(tmp_path, caplog) -> None:
    """Several API processes on PostgreSQL, each with its own counters, gave
    clients N times the published limits without a word."""
    shared = "postgresql+psycopg://u:p@db.invalid/upscayl"
    RateLimits(make_settings(tmp_path, database_url=shared))
    RateLimits(make_settings(tmp_path, rate_limits_enabled=False, database_url=shared))
    RateLimits(make_settings(tmp_path))  # SQLite: one process
    warned = [r.getMessage() for r in caplog.records if r.name == "upscayl_cloud.api.ratelimit"]
    assert len(warned) == 1 and "each API process allows the full limit" in warned[0]


def test_every_limit_of_an_operation_is_enforced(tmp_path) -> None:
    """``100/hour;2/minute`` was read as 100/hour alone (``limits.parse``
    keeps the first): the second limit was never applied."""
    settings = make_settings(tmp_path, rate_limits={"get-upscayl-history": "100/hour;2/minute"})
    with client_for(settings) as client:
        key = new_principal(client.app.state.ctx)[0]
        answers = [
            client.post("/get-upscayl-history", json={}, headers={"X-API-Key": key})
            for _ in range(3)
        ]
        assert [r.status_code for r in answers] == [200, 200, 429]
        # The headers describe the limit that binds: the minute's.
        assert answers[0].headers["X-RateLimit-Limit"] == "2"
        assert answers[0].headers["X-RateLimit-Remaining"] == "1"
        assert answers[1].headers["RateLimit-Policy"] == '"get-upscayl-history";q=2;w=60'
        refused = answers[2]
        assert refused.headers["X-RateLimit-Limit"] == "2"
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "2 per 60 seconds" in refused.json()["message"]


def test_a_limit_written_twice_is_counted_once(tmp_path) -> None:
    """Both spellings share one counter, and each request was counted once
    per spelling: 3 a minute admitted 1."""
    settings = make_settings(
        tmp_path, rate_limits={"get-upscayl-history": "3/minute;3 per 1 minute"}
    )
    with client_for(settings) as client:
        key = new_principal(client.app.state.ctx)[0]
        answers = [
            client.post("/get-upscayl-history", json={}, headers={"X-API-Key": key})
            for _ in range(4)
        ]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]


def test_refusals_by_one_limit_use_up_none_of_the_others(tmp_path) -> None:
    """A client hammering the short limit would otherwise spend the long one
    on requests it never got."""
    from limits import parse
    from limits.storage import MemoryStorage
    from limits.strategies import MovingWindowRateLimiter

    storage = MemoryStorage()
    settings = make_settings(tmp_path, rate_limits={"start-task": "5/hour;1/minute"})
    limits = RateLimits(settings, storage=storage)
    assert limits.check("start-task", "k")[1] is None
    for _ in range(10):
        headers, refusal = limits.check("start-task", "k")
        assert refusal is not None and headers["X-RateLimit-Limit"] == "1"
    hour = MovingWindowRateLimiter(storage).get_window_stats(parse("5/hour"), "k", "start-task")
    assert hour.remaining == 4


def test_the_headers_follow_the_limit_closest_to_refusing(tmp_path) -> None:
    """Admitted: the limit with the fewest requests left. Refused: the
    refusing limit that frees last, so that Retry-After is a time when the
    request is admitted."""
    settings = make_settings(tmp_path, rate_limits={"start-task": "5/minute;2/hour"})
    limits = RateLimits(settings)
    first, _ = limits.check("start-task", "k")
    assert (first["X-RateLimit-Limit"], first["X-RateLimit-Remaining"]) == ("2", "1")
    assert first["RateLimit-Policy"] == '"start-task";q=2;w=3600'
    limits.check("start-task", "k")
    headers, refusal = limits.check("start-task", "k")
    assert refusal is not None and headers["X-RateLimit-Limit"] == "2"
    assert 60 < refusal.retry_after_seconds <= 3600


def test_capabilities_publish_the_lowest_sustained_rate(tmp_path) -> None:
    """One limit per operation is published: the one a client pacing itself
    must keep under (60 an hour, not 100, for ``100/hour;1/minute``)."""
    settings = make_settings(
        tmp_path,
        rate_limits={"get-task-status": "100/hour;1/minute", "start-task": "5/second;100/hour"},
    )
    published = RateLimits(settings).published()
    assert published is not None
    assert published["get-task-status"] == {"requests": 1, "periodSeconds": 60}
    assert published["start-task"] == {"requests": 100, "periodSeconds": 3600}


def test_several_limits_are_enforced_in_redis_too(tmp_path, redis_url) -> None:
    """The same rules with the counters in a real Redis (asked, then counted)."""
    import uuid

    settings = make_settings(
        tmp_path,
        rate_limit_storage_uri=redis_url,
        rate_limits={"get-task-status": "100/hour;2/minute"},
    )
    limits = RateLimits(settings)
    key = f"k-{uuid.uuid4()}"
    answers = [limits.check("get-task-status", key) for _ in range(5)]
    assert [refusal is None for _headers, refusal in answers] == [True, True, False, False, False]
    headers, refusal = answers[-1]
    assert headers["X-RateLimit-Limit"] == "2" and 1 <= refusal.retry_after_seconds <= 60
    other = make_settings(
        tmp_path, rate_limit_storage_uri=redis_url, rate_limits={"get-task-status": "100/hour"}
    )
    hour, _ = RateLimits(other).check("get-task-status", key)
    assert hour["X-RateLimit-Remaining"] == "97"  # two admitted, and this one
