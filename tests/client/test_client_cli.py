"""``upscayl-cloud client ...`` end to end: the real command against the real server."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from support.server import Server
from tests.client.helpers import FAST, write_image
from upscayl_cloud.cli import app
from upscayl_cloud.client import MODELS, Client, UpscaylError


@pytest.fixture
def run(server: Server, api_key: str) -> CliRunner:
    return CliRunner(env={"UPSCAYL_URL": server.url, "UPSCAYL_API_KEY": api_key, "COLUMNS": "200"})


def test_upscale_folder_summary_and_exit_status(run: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_image(folder / "a.png", 16, 16)
    write_image(folder / "deep" / "b.png", 16, 16, seed=3)
    (folder / "deep" / "fake.jpg").write_bytes(b"GIF89a not really")
    out = tmp_path / "out"

    ok = run.invoke(app, ["client", "upscale", str(folder / "a.png"), "-m", FAST, "-s", "2",
                          "-f", "png", "-o", str(out)])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert (out / f"a_upscayl_2x_{FAST}.png").exists()
    assert "Summary" in ok.output and "1 done, 0 failed" in ok.output
    with Client(run.env["UPSCAYL_URL"], run.env["UPSCAYL_API_KEY"]) as api:
        [task] = api.get_history()["data"]
    assert f"task {task['taskId']} (1 file)" in ok.output  # whole: `client status` takes it

    flat = run.invoke(
        app, ["client", "upscale", str(folder), "-m", FAST, "-s", "2", "-o", str(out)]
    )
    assert flat.exit_code == 0 and "1 done" in flat.output  # no --recursive: top level only

    deep = run.invoke(app, ["client", "upscale", str(folder), "--recursive", "-m", FAST, "-s", "2",
                            "-f", "webp", "-o", str(out)])  # fmt: skip
    assert deep.exit_code == 0, deep.output  # a skipped non-image is not a failure
    assert (out / "deep" / f"b_upscayl_2x_{FAST}.webp").exists()
    assert "fake.jpg" in deep.output and "not a JPEG, PNG or WebP" in deep.output
    assert "2 done, 0 failed, 1 skipped" in deep.output


def test_upscale_failure_exits_non_zero(run: CliRunner, tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.png", 16, 16)
    result = run.invoke(app, ["client", "upscale", str(good), str(tmp_path / "missing.png"),
                              "-m", FAST, "-s", "2"])  # fmt: skip
    assert result.exit_code == 1
    assert "no such file or folder" in result.output and "1 done, 1 failed" in result.output


def test_face_flag_is_sent_or_its_refusal_shown(run: CliRunner, tmp_path: Path) -> None:
    image = write_image(tmp_path / "face.jpg", 16, 16)
    result = run.invoke(app, ["client", "upscale", str(image), "-m", FAST, "-s", "2", "--face"])
    if result.exit_code == 0:
        history = run.invoke(app, ["client", "history", "--json", "--limit", "1"])
        assert json.loads(history.output)[0]["enhanceFace"] is True
    else:  # a server without face models may refuse: its code and message are shown
        assert "failed" in result.output and ":" in result.output


def test_status_history_and_models(run: CliRunner, tmp_path: Path) -> None:
    good = write_image(tmp_path / "s.png", 16, 16)
    assert run.invoke(app, ["client", "upscale", str(good), "-m", FAST, "-s", "2"]).exit_code == 0
    listed = run.invoke(app, ["client", "history", "--json", "--limit", "5"])
    [task] = json.loads(listed.output)
    status = run.invoke(app, ["client", "status", task["taskId"]])
    assert status.exit_code == 0 and "completed" in status.output and "100%" in status.output
    assert f"s_upscayl_2x_{FAST}.jpg" in status.output
    as_json = run.invoke(app, ["client", "status", task["taskId"], "--json"])
    assert json.loads(as_json.output)["status"] == "completed"
    table = run.invoke(app, ["client", "history"])
    assert table.exit_code == 0 and task["taskId"] in table.output
    failed = run.invoke(app, ["client", "history", "--failed", "--json"])
    assert json.loads(failed.output) == []
    models = run.invoke(app, ["client", "models"])
    assert models.exit_code == 0 and all(name in models.output for name in MODELS)


def test_models_come_from_the_server_without_a_key_or_with_a_wrong_one(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a key, or with one the server refuses, the spec's list was
    shown as if it were the server's; with no server at all, silently too."""
    monkeypatch.delenv("UPSCAYL_API_KEY", raising=False)
    offered = httpx.get(f"{server.url}/capabilities").json()["data"]
    for key in ([], ["--key", "uc_wrong"]):
        listed = CliRunner().invoke(app, ["client", "models", "--url", server.url, *key])
        assert listed.exit_code == 0, listed.output
        assert "Face enhancement (--face):" in listed.output  # only the server says that
        assert "listing the spec's models" not in listed.output
        if not offered["faceEnhancement"]:  # it said "unavailable", not why
            assert offered["faceEnhancementMessage"] in " ".join(listed.output.split())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{probe.getsockname()[1]}"
    alone = CliRunner().invoke(app, ["client", "models", "--url", nobody])
    assert alone.exit_code == 0 and all(name in alone.output for name in MODELS)
    said = " ".join(alone.output.split())
    assert f"Cannot reach {nobody}" in said and "listing the spec's models" in said


def test_errors_show_code_and_message(run: CliRunner, server: Server) -> None:
    missing = run.invoke(app, ["client", "status", "30a89e69-c702-4247-9905-f0a53dfa45ab"])
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.output
    denied = run.invoke(app, ["client", "history", "--key", "uc_wrong"])
    assert denied.exit_code == 1 and "UNAUTHORIZED" in denied.output
    bad = run.invoke(app, ["client", "upscale", "x.png", "-m", "nope"])
    assert bad.exit_code == 2 and "nope" in bad.output


def test_errors_say_what_to_do_in_the_command_lines_words(server: Server) -> None:
    """No key: the option to pass, not the SDK's ``api_key``. No server: which
    URL was tried, and how to name another."""
    bare = CliRunner(env={"UPSCAYL_URL": server.url, "UPSCAYL_API_KEY": None})
    keyless = bare.invoke(app, ["client", "history"])
    assert keyless.exit_code == 1
    assert "MISSING_API_KEY: pass --key or set UPSCAYL_API_KEY" in keyless.output
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{probe.getsockname()[1]}"
    unreachable = bare.invoke(app, ["client", "history", "--url", nobody, "--key", "uc_x"])
    assert unreachable.exit_code == 1 and "CONNECTION_ERROR" in unreachable.output
    assert f"is the server at {nobody} running?" in " ".join(unreachable.output.split())


def test_upscale_reports_the_second_name_it_wrote(run: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "f2"
    write_image(folder / "a.jpg", 24, 16)
    write_image(folder / "a.png", 16, 16, seed=1)
    out = tmp_path / "out2"
    result = run.invoke(app, ["client", "upscale", str(folder), "-m", FAST, "-s", "2",
                              "-f", "png", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    second = out / f"a_upscayl_2x_{FAST} (2).png"
    assert second.exists() and (out / f"a_upscayl_2x_{FAST}.png").exists()
    assert str(second) in result.output and "2 done, 0 failed" in result.output


def test_a_folder_run_again_in_place_refreshes_its_results(run: CliRunner, tmp_path: Path) -> None:
    """The second run neither upscales (nor pays for) the first run's results
    nor gives the originals' results `` (n)`` names."""
    folder = tmp_path / "f3"
    write_image(folder / "a.png", 16, 16)
    args = ["client", "upscale", str(folder), "-m", FAST, "-s", "2", "-f", "png"]
    first = run.invoke(app, args)
    assert first.exit_code == 0 and "1 done, 0 failed, 0 skipped" in first.output, first.output
    again = run.invoke(app, args)
    assert again.exit_code == 0 and "1 done, 0 failed, 1 skipped" in again.output, again.output
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert names == ["a.png", f"a_upscayl_2x_{FAST}.png"]  # and the hidden manifest


def test_ids_shown_whole_on_a_narrow_terminal(server: Server, api_key: str, tmp_path: Path) -> None:
    narrow = CliRunner(env={"UPSCAYL_URL": server.url, "UPSCAYL_API_KEY": api_key, "COLUMNS": "80"})
    image = write_image(tmp_path / "n.png", 16, 16)
    assert (
        narrow.invoke(app, ["client", "upscale", str(image), "-m", FAST, "-s", "2"]).exit_code == 0
    )
    [task] = json.loads(narrow.invoke(app, ["client", "history", "--json"]).output)
    table = narrow.invoke(app, ["client", "history"])
    assert table.exit_code == 0 and task["taskId"] in table.output  # one line, not "dbf6fd4d-2…"
    assert f"{task['taskId']}  completed" in table.output  # the status whole too, not "com…"
    assert f"{task['model']} · 2x · 1 file" in table.output
    status = narrow.invoke(app, ["client", "status", task["taskId"]])
    link = task["files"][0]["downloadLink"]
    folded = "".join(line.strip("│ ").split("│")[-1].strip() for line in status.output.splitlines())
    assert status.exit_code == 0 and "…" not in status.output and link.split("?")[0] in folded


def test_an_output_that_is_a_file_is_refused_before_uploading(
    run: CliRunner, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "me.png", 16, 16)
    taken = write_image(tmp_path / "me.jpg", 16, 16, seed=1)
    for out in (taken, taken / "big"):
        result = run.invoke(app, ["client", "upscale", str(image), "-m", FAST, "-o", str(out)])
        assert result.exit_code == 2, result.output
        unboxed = " ".join(result.output.replace("│", " ").split())  # rich folds long lines
        assert "is a file, not a folder" in unboxed, result.output
    history = run.invoke(app, ["client", "history", "--json"])
    assert json.loads(history.output) == []  # nothing was sent, nothing charged


def test_empty_results_bools_and_a_url_without_scheme(run: CliRunner, tmp_path: Path) -> None:
    empty = run.invoke(app, ["client", "upscale", str(tmp_path)])
    assert empty.exit_code == 0 and "No images found" in empty.output, empty.output
    assert "Summary" not in empty.output
    none = run.invoke(app, ["client", "history"])
    assert none.exit_code == 0 and "No tasks" in none.output, none.output

    image = write_image(tmp_path / "a.png", 16, 16)
    assert run.invoke(app, ["client", "upscale", str(image), "-m", FAST, "-s", "2"]).exit_code == 0
    [task] = json.loads(run.invoke(app, ["client", "history", "--json"]).output)
    status = run.invoke(app, ["client", "status", task["taskId"]])
    assert "enhanceFace: false" in status.output and "False" not in status.output

    began = time.monotonic()
    schemeless = run.invoke(app, ["client", "history", "--url", "localhost:8000"])
    assert schemeless.exit_code == 2 and time.monotonic() - began < 5
    assert "http:// or https://" in " ".join(schemeless.output.replace("│", " ").split())
    with pytest.raises(UpscaylError) as refused:
        Client("localhost:8000", "k")
    assert refused.value.code == "INVALID_URL"


def test_brackets_in_paths_are_printed_not_taken_for_markup(run: CliRunner, tmp_path: Path) -> None:
    """``holiday [edit].jpg`` was shown as ``holiday .jpg``, and a path
    holding ``[/b]`` stopped the command with rich's MarkupError after the
    results were written."""
    folder = tmp_path / "in [/b]"
    image = write_image(folder / "holiday [edit].png", 16, 16)
    missing = folder / "gone [red].png"
    result = run.invoke(app, ["client", "upscale", str(image), str(missing), "-m", FAST,
                              "-s", "2", "-f", "png"])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "MarkupError" not in result.output
    flat = " ".join(result.output.split())  # the table may fold long paths
    assert "gone [red].png: no such file or folder" in flat
    assert (folder / f"holiday [edit]_upscayl_2x_{FAST}.png").exists()
    assert "[edit]" in result.output and "[/b]" in result.output


def test_models_from_a_capabilities_answer_that_is_no_json_fall_back_to_the_specs() -> None:
    """A stand-in, named so, for a proxy's page in place of the capabilities:
    a 200 that is HTML crashed the command with a traceback."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class PortalPages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            openapi = self.path == "/openapi.json"
            body = b'{"paths": {"/capabilities": {"get": {}}}}' if openapi else b"<html>"
            self.send_response(200)
            self.send_header("Content-Type", "application/json" if openapi else "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), PortalPages) as portal:
        threading.Thread(target=portal.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{portal.server_address[1]}"
        listed = CliRunner().invoke(app, ["client", "models", "--url", url])
        portal.shutdown()
    assert listed.exit_code == 0, listed.output
    assert all(name in listed.output for name in MODELS) and "Traceback" not in listed.output
    assert f"{url}/capabilities:" in " ".join(listed.output.split())
