"""GET /capabilities and the static UI, through the real app in-process."""

from __future__ import annotations

from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from support.app import client_for
from support.context import SPEC_PATH, make_settings, new_principal
from upscayl_cloud.config import Settings
from upscayl_cloud.engine import faces
from upscayl_cloud.engine.catalog import MODELS
from upscayl_cloud.services.context import Context

#: start-task's model enum, from the spec itself.
SPEC_MODELS = set(
    yaml.safe_load(SPEC_PATH.read_text())["paths"]["/start-task"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]["schema"]["properties"]["model"]["enum"]
)


def test_public_answer_lists_what_start_task_accepts(client: TestClient) -> None:
    response = client.get("/capabilities")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    data = body["data"]
    assert {m["name"] for m in data["models"]} == SPEC_MODELS
    quick = next(m for m in data["models"] if m["name"] == "quick-clear-4x")
    assert quick["title"] == MODELS["quick-clear-4x"].title
    assert quick["description"] == MODELS["quick-clear-4x"].description
    assert data["defaultModel"] == "upscayl-standard-4x"
    assert data["scales"] == ["2", "4", "8"]
    assert data["formats"] == ["png", "jpg", "webp"]
    assert data["limits"]["maxUploadBytes"] == 104_857_600
    assert data["limits"]["fileTypes"] == ["image/jpeg", "image/png", "image/webp"]
    assert data["limits"]["maxOutputEdge"] == {"webp": 16383, "jpg": 65500}
    assert "account" not in data


def test_face_enhancement_follows_the_installed_models(client: TestClient) -> None:
    data = client.get("/capabilities").json()["data"]
    assert data["faceEnhancement"] is False
    assert data["faceEnhancementMessage"] == faces.UNAVAILABLE_MESSAGE
    ctx: Context = client.app.state.ctx
    folder = faces.models_dir(ctx.settings.data_dir)
    folder.mkdir(parents=True)
    (folder / "gfpgan.onnx").write_bytes(b"not opened by this endpoint")
    data = client.get("/capabilities").json()["data"]
    assert data["faceEnhancement"] is True
    assert "faceEnhancementMessage" not in data


def test_a_key_adds_the_accounts_credits(client: TestClient) -> None:
    ctx: Context = client.app.state.ctx
    key = new_principal(ctx, credits=7)[0]
    data = client.get("/capabilities", headers={"X-API-Key": key}).json()["data"]
    assert data["account"] == {"credits": 7}


def test_a_wrong_key_is_refused(client: TestClient) -> None:
    response = client.get("/capabilities", headers={"X-API-Key": "uc_nope"})
    assert response.status_code == 401
    assert response.json()["error"] == "UNAUTHORIZED"


def test_published_in_openapi_for_clients_that_look_for_it(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "get" in paths["/capabilities"]


def test_the_page_is_served_at_the_root(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "form-action 'self'" in response.headers["content-security-policy"]
    # Only there: a copy under /web/ ran without the headers above.
    assert client.get("/web/index.html").status_code == 404
    asset = client.get("/web/js/main.js")
    assert asset.status_code == 200
    assert asset.headers["x-content-type-options"] == "nosniff"


def test_unknown_routes_keep_the_api_error_shape(client: TestClient) -> None:
    response = client.post("/no-such-operation", json={})
    assert response.status_code == 404
    assert response.json()["error"] == "NOT_FOUND"


def test_static_files_ship_inside_the_package() -> None:
    from upscayl_cloud import web

    assert Path(web.STATIC_DIR, "index.html").is_file()


def test_the_rate_limits_are_published(client: TestClient) -> None:
    """The spec's x-rateLimit unless the operator set other limits: a client
    polling many tasks paces itself by get-task-status's."""
    limits = client.get("/capabilities").json()["data"]["rateLimits"]
    assert limits["get-task-status"] == {"requests": 100, "periodSeconds": 3600}
    assert limits["start-task"] == {"requests": 50, "periodSeconds": 3600}
    assert set(limits) == {
        "get-upload-url",
        "complete-multipart-upload",
        "start-task",
        "get-task-status",
        "get-upscayl-history",
    }


def test_raised_and_disabled_rate_limits_are_published_as_they_are(settings: Settings) -> None:
    raised = settings.model_copy(update={"rate_limits": {"get-task-status": "20 per minute"}})
    with client_for(raised) as client:
        limits = client.get("/capabilities").json()["data"]["rateLimits"]
    assert limits["get-task-status"] == {"requests": 20, "periodSeconds": 60}
    off = settings.model_copy(update={"rate_limits_enabled": False})
    with client_for(off) as client:
        assert "rateLimits" not in client.get("/capabilities").json()["data"]


def test_face_enhancement_off_when_the_configured_model_is_missing(tmp_path: Path) -> None:
    """Start-task refuses faces when ``UPSCAYL_FACE_MODEL`` is not installed, so
    /capabilities must not promise them because some other model is."""
    settings = make_settings(tmp_path / "data", face_model="gfpgan-1.4")
    folder = faces.models_dir(settings.data_dir)
    folder.mkdir(parents=True)
    (folder / "other.onnx").write_bytes(b"not opened by this endpoint")
    with client_for(settings) as client:
        data = client.get("/capabilities").json()["data"]
        assert data["faceEnhancement"] is False
        assert "'gfpgan-1.4' is not installed" in data["faceEnhancementMessage"]
        (folder / "gfpgan-1.4.onnx").write_bytes(b"not opened either")
        data = client.get("/capabilities").json()["data"]
        assert data["faceEnhancement"] is True
