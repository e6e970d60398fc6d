"""``upscayl-cloud models list|add|remove`` on a real data directory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.engine.faces import nets
from upscayl_cloud.cli import models as models_cli
from upscayl_cloud.config import get_settings
from upscayl_cloud.engine.catalog import MODELS


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("UPSCAYL_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    cli = typer.Typer()
    models_cli.register(cli)
    yield cli
    get_settings.cache_clear()


def test_list_without_face_models(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in MODELS)
    assert "Face enhancement: unavailable" in result.output
    info = json.loads(CliRunner().invoke(app, ["models", "list", "--json"]).output)
    assert len(info["models"]) == 12
    assert info["faceModels"] == [] and info["faceEnhancement"] is False


def test_add_then_list_then_remove(app: typer.Typer, tmp_path: Path) -> None:
    source = nets.invert(tmp_path / "restorer.onnx")
    result = CliRunner().invoke(app, ["models", "add", str(source), "--name", "gfpgan-1.4"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "models" / "faces" / "gfpgan-1.4.onnx").is_file()
    listed = CliRunner().invoke(app, ["models", "list"]).output
    assert "gfpgan-1.4" in listed and "Face enhancement: available" in listed
    info = json.loads(CliRunner().invoke(app, ["models", "list", "--json"]).output)
    assert info["faceEnhancement"] is True and info["faceModels"][0]["name"] == "gfpgan-1.4"
    assert CliRunner().invoke(app, ["models", "remove", "gfpgan-1.4"]).exit_code == 0
    assert "Face enhancement: unavailable" in CliRunner().invoke(app, ["models", "list"]).output


def test_add_beside_no_database_says_the_server_may_not_see_it(
    app: typer.Typer, tmp_path: Path
) -> None:
    """Run in another folder than the server's, ``models add`` installed
    into a ``./data`` there that no server reads, silently."""
    source = nets.invert(tmp_path / "restorer.onnx")
    lonely = CliRunner().invoke(app, ["models", "add", str(source)])
    assert lonely.exit_code == 0, lonely.output
    database = (tmp_path / "data" / "upscayl.db").resolve()
    assert f"note: no database at {database}" in " ".join(lonely.output.split())

    database.touch()  # the server's data folder
    beside = CliRunner().invoke(app, ["models", "add", str(source), "--name", "second"])
    assert beside.exit_code == 0 and "note:" not in beside.output


def test_add_refuses_a_bad_model_with_a_clear_error(app: typer.Typer, tmp_path: Path) -> None:
    source = nets.affine(tmp_path / "bytes.onnx", 127.5, 127.5)
    result = CliRunner().invoke(app, ["models", "add", str(source)])
    assert result.exit_code == 1
    assert "expected RGB in [-1, 1]" in result.output
    assert not (tmp_path / "data" / "models" / "faces" / "bytes.onnx").exists()


def test_list_names_a_model_that_cannot_be_used_and_why(app: typer.Typer, tmp_path: Path) -> None:
    """An empty file copied in by hand was listed, and enhancement called
    available, though no worker could load it."""
    faces_dir = tmp_path / "data" / "models" / "faces"
    faces_dir.mkdir(parents=True)
    (faces_dir / "gfpgan.onnx").write_bytes(b"")
    result = CliRunner().invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^  gfpgan +unusable: its file is empty$", result.output, re.M)
    assert "(none)" not in result.output
    assert "Face enhancement: unavailable: this server's face-restoration model 'gfpgan'" in (
        " ".join(result.output.split())
    )
    info = json.loads(CliRunner().invoke(app, ["models", "list", "--json"]).output)
    assert info["faceModels"] == [] and info["faceEnhancement"] is False
    assert info["unusableFaceModels"] == [{"name": "gfpgan", "reason": "its file is empty"}]


def test_backends_says_what_each_would_run_and_which_is_selected(
    app: typer.Typer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from upscayl_cloud.engine.backends import select

    result = CliRunner().invoke(app, ["models", "backends"])
    assert result.exit_code == 0, result.output
    for name in ("ncnn", "openvino", "onnxruntime"):
        assert name in result.output
    assert "<- selected" in result.output
    select._auto.cache_clear()
    info = json.loads(CliRunner().invoke(app, ["models", "backends", "--json"]).output)
    assert info["configured"] == "auto"
    assert info["selected"] == select.resolve("auto", use_gpu=True).backend
    assert {row["name"] for row in info["backends"]} == set(select.BACKENDS)

    monkeypatch.setenv("UPSCAYL_ENGINE_BACKEND", "ncnn")
    get_settings.cache_clear()
    info = json.loads(CliRunner().invoke(app, ["models", "backends", "--json"]).output)
    assert (info["selected"], info["reason"]) == ("ncnn", "set by configuration")


def test_tune_times_every_tile_width_once_for_the_workers(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 24-pixel tiles SPAN's sources are at most 24 + 2 x 16 + 4 wide:
    every width from 18 to 60 is timed, into the files the workers read."""
    monkeypatch.setenv("UPSCAYL_ENGINE_BACKEND", "openvino")
    monkeypatch.setenv("UPSCAYL_ENGINE_TILE_SIZE", "24")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["models", "tune", "upscayl-lite-4x"])
    assert result.exit_code == 0, result.output
    for key in ("span-x2-ch48", "span-x4-ch48"):
        assert re.search(rf"^  {key} +widths 18-60: \d+ slow \(\d+%\)", result.output, re.M)
    files = sorted((tmp_path / "data" / "cache" / "openvino" / "widths").iterdir())
    assert [f.name[:12] for f in files] == ["span-x2-ch48", "span-x4-ch48"]
    for timings in files:
        assert sorted(map(int, json.loads(timings.read_text()))) == list(range(18, 61))
    again = CliRunner().invoke(app, ["models", "tune", "upscayl-lite-4x"])
    assert again.exit_code == 0 and files == sorted(files[0].parent.iterdir())
    # Workers started with --workers 2 run two streams: timings of their own.
    split = CliRunner().invoke(app, ["models", "tune", "upscayl-lite-4x", "--workers", "2"])
    assert split.exit_code == 0, split.output
    assert "streams" in split.output
    assert len(list(files[0].parent.iterdir())) == 4


def test_tune_on_a_backend_without_slow_widths_does_nothing(
    app: typer.Typer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSCAYL_ENGINE_BACKEND", "ncnn")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["models", "tune", "quick-clear-4x"])
    assert result.exit_code == 0, result.output
    assert "Nothing to tune: only OpenVINO's tiles step around slow widths, not ncnn's." in (
        result.output
    )


def test_tune_names_the_models_it_knows_when_given_another(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["models", "tune", "upscayl-lite-4x", "no-such-model"])
    assert result.exit_code == 2
    assert "unknown model 'no-such-model'" in result.output and "quick-clear-4x" in result.output


def test_list_names_the_configured_face_model_or_why_it_is_missing(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``UPSCAYL_FACE_MODEL`` is what workers use, so the list says that one,
    not the first by name, and says so when it is not installed."""
    for name in ("a-first", "b-chosen"):
        source = nets.invert(tmp_path / f"{name}.onnx")
        assert CliRunner().invoke(app, ["models", "add", str(source)]).exit_code == 0
    monkeypatch.setenv("UPSCAYL_FACE_MODEL", "b-chosen")
    get_settings.cache_clear()
    assert "available (uses b-chosen)" in CliRunner().invoke(app, ["models", "list"]).output
    info = json.loads(CliRunner().invoke(app, ["models", "list", "--json"]).output)
    assert info["faceModel"] == "b-chosen" and info["faceEnhancement"] is True
    monkeypatch.setenv("UPSCAYL_FACE_MODEL", "c-missing")
    get_settings.cache_clear()
    listed = CliRunner().invoke(app, ["models", "list"]).output
    assert "Face enhancement: unavailable: " in listed and "'c-missing' is not installed" in listed
    info = json.loads(CliRunner().invoke(app, ["models", "list", "--json"]).output)
    assert info["faceModel"] is None and info["faceEnhancement"] is False
