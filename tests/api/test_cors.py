"""Cross-origin calls (``UPSCAYL_CORS_ORIGINS``), through the real app in-process.

The browser side, a page on another origin uploading through a signed link,
is tests/web/test_cross_origin.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc

from support.app import client_for
from support.context import make_settings, new_principal
from upscayl_cloud.api import deps

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
        assert answer.headers["vary"] == "Origin"  # caches keep one answer per origin
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
        header = client.options(
            "/start-task",
            headers={**PREFLIGHT, "Access-Control-Request-Headers": "authorization"},
        )
        assert header.status_code == 400 and "(headers)" in header.json()["message"]
        long = client.options("/start-task", headers={**PREFLIGHT, "Origin": "http://" + "a" * 500})
        assert long.status_code == 400 and len(long.json()["message"]) < 250  # echo clipped


def test_any_origin_with_a_star(tmp_path: Path) -> None:
    with client_for(make_settings(tmp_path / "data", cors_origins="*")) as client:
        preflight = client.options(
            "/get-upload-url", headers={**PREFLIGHT, "Origin": "https://anyone.test"}
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "*"


def test_private_network_preflights_are_answered_for_listed_origins_only(tmp_path: Path) -> None:
    """Chromium asks before a public page may reach a private address. A
    named origin is the operator's choice; ``*`` must not open every LAN
    server to every website a visitor opens."""
    asking = {**PREFLIGHT, "Access-Control-Request-Private-Network": "true"}
    with client_for(make_settings(tmp_path / "named", cors_origins=APP)) as client:
        named = client.options("/get-upscayl-history", headers=asking)
        assert named.status_code == 200
        assert named.headers["access-control-allow-private-network"] == "true"
    with client_for(make_settings(tmp_path / "star", cors_origins="*")) as client:
        star = client.options("/get-upscayl-history", headers=asking)
        assert star.status_code == 400
        assert (
            "lists that origin by name in UPSCAYL_CORS_ORIGINS (not through *)"
            in (star.json()["message"])
        )
        assert "access-control-allow-private-network" not in star.headers


def test_probes_and_metrics_are_never_shared_with_pages(tmp_path: Path) -> None:
    with client_for(make_settings(tmp_path / "data", cors_origins="*")) as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            answer = client.get(path, headers={"Origin": APP})
            assert answer.status_code == 200, path
            assert "access-control-allow-origin" not in answer.headers, path
        shared = client.get("/capabilities", headers={"Origin": APP})
        assert shared.headers["access-control-allow-origin"] == "*"


def test_an_unexpected_failure_is_readable_by_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starlette answers unhandled exceptions outside every middleware; the
    CORS layer answers them itself so a page reads the 503, not a bare
    network error. The database outage is a stand-in (an OperationalError
    raised where the key is checked), as in test_database_unavailable.py."""

    def down(*_args: object) -> None:
        raise sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))

    with client_for(make_settings(tmp_path / "data", cors_origins=APP)) as client:
        monkeypatch.setattr(deps, "authenticate", down)
        answer = client.post(
            "/get-upscayl-history", json={}, headers={"Origin": APP, "X-API-Key": "uc_x"}
        )
        assert answer.status_code == 503
        assert answer.json()["error"] == "SERVICE_UNAVAILABLE"
        assert answer.headers["access-control-allow-origin"] == APP
        assert int(answer.headers["Retry-After"]) > 0
