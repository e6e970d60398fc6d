"""Two API processes sharing one Redis enforce ONE combined limit per key."""

from __future__ import annotations

import json
from pathlib import Path

from support.client import ApiClient, make_client
from support.server import Server


def test_two_replicas_share_one_limit(tmp_path: Path, redis_url: str) -> None:
    env = {
        "rate_limit_storage_uri": redis_url,
        "rate_limits": json.dumps({"get-upscayl-history": "5/hour"}),
        "create_first_key": "false",
    }
    data_dir = tmp_path / "data"
    first = Server(data_dir, workers=0, **env).start()
    second = Server(data_dir, workers=0, **env).start()
    try:
        one = make_client(first)
        two = ApiClient(second.url, one.http.headers["X-API-Key"])
        served = [api.post("/get-upscayl-history").status_code for api in (one, two, one, two, one)]
        assert served == [200] * 5
        for api in (one, two):
            refused = api.post("/get-upscayl-history")
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"] == "RATE_LIMIT_EXCEEDED"
            assert int(refused.headers["Retry-After"]) > 0
        # Another key has its own budget, on either replica.
        other = ApiClient(second.url, make_client(first).http.headers["X-API-Key"])
        assert other.post("/get-upscayl-history").status_code == 200
    finally:
        first.stop()
        second.stop()
