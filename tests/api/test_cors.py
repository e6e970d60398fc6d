"""Cross-origin calls (``UPSCAYL_CORS_ORIGINS``), through the real app in-process.

The browser side, a page on another origin uploading through a signed link,
is tests/web/test_cross_origin.py."""

from __future__ import annotations

from pathlib import Path

from support.app import client_for
from support.context import make_settings, new_principal

APP = "http://app.example.test"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "x-api-key,content-type",
}


def test_no_origin_is_allowed_unless_configured(tmp_path: Path) -> None:
    with client_for(make_settings(tmp_path / "data")) as client:
        key = new_principal(client.app.state.ctx)[0]
        preflight = client.options("/get-upscayl-history", headers=PREFLIGHT)
        assert preflight.status_code == 405
        assert preflight.json()["error"] == "METHOD_NOT_ALLOWED"
        answer = client.post(
            "/get-upscayl-history", json={}, headers={"Origin": APP, "X-API-Key": key}
        )
        assert answer.status_code == 200
        assert not any(name.startswith("access-control-") for name in answer.headers)


def test_a_listed_origin_may_call_and_read_what_it_needs(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", cors_origins=f"{APP}/, http://other.test")
    with client_for(settings) as client:
        key = new_principal(client.app.state.ctx)[0]
        preflight = client.options("/get-upscayl-history", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == APP
        assert "X-API-Key" in preflight.headers["access-control-allow-headers"]
        assert "access-control-allow-credentials" not in preflight.headers
        answer = client.post(
            "/get-upscayl-history", json={}, headers={"Origin": APP, "X-API-Key": key}
        )
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == APP
        exposed = answer.headers["access-control-expose-headers"]
        assert {"ETag", "Retry-After", "X-RateLimit-Remaining"} <= set(exposed.split(", "))
        # A refusal from a layer inside (the JSON body cap) is readable too.
        too_big = client.post(
            "/get-upscayl-history",
            content=b" " * (2 << 20),
            headers={"Origin": APP, "X-API-Key": key, "Content-Type": "application/json"},
        )
        assert too_big.status_code == 400
        assert too_big.headers["access-control-allow-origin"] == APP


def test_a_refused_preflight_says_why_in_the_error_shape(tmp_path: Path) -> None:
    with client_for(make_settings(tmp_path / "data", cors_origins=APP)) as client:
        stranger = client.options(
            "/start-task", headers={**PREFLIGHT, "Origin": "http://elsewhere.test"}
        )
        assert stranger.status_code == 400
        assert "access-control-allow-origin" not in stranger.headers
        body = stranger.json()
        assert body["error"] == "BAD_REQUEST"
        assert "http://elsewhere.test" in body["message"]
        assert "UPSCAYL_CORS_ORIGINS" in body["message"]
        odd = client.options(
            "/start-task",
            headers={**PREFLIGHT, "Access-Control-Request-Method": "DELETE"},
        )
        assert odd.status_code == 400
        assert "(method)" in odd.json()["message"]


def test_any_origin_with_a_star(tmp_path: Path) -> None:
    with client_for(make_settings(tmp_path / "data", cors_origins="*")) as client:
        preflight = client.options(
            "/get-upload-url", headers={**PREFLIGHT, "Origin": "https://anyone.test"}
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "*"
