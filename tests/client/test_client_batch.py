"""``upscale()`` over a folder: nested images, a fake image, a corrupt one, a dangling
link; results with the same name, and hostile names from a server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from support.context import new_principal
from support.images import png_bytes
from support.server import Server
from tests.client.helpers import (
    FAST,
    MIB,
    QUICK_POLL,
    QUICK_RETRY,
    RenamingProxy,
    big_png,
    dimensions,
    read_only,
    write_image,
)
from upscayl_cloud.cli import app
from upscayl_cloud.client import (
    ApiError,
    Client,
    FileResult,
    PollSchedule,
    RetryEvent,
    UnwritableOutputError,
    UpscaleInterrupted,
    upscale,
)


def _visible(folder: Path) -> set[Path]:
    """What a folder holds, less hidden files (the manifest of its results)."""
    return {path for path in folder.iterdir() if not path.name.startswith(".")}


class Recorder:
    """Collects what the progress hooks were told."""

    def __init__(self) -> None:
        self.total = 0
        self.sent = 0
        self.percents: list[float] = []
        self.results: list[FileResult] = []

    def uploading(self, total_bytes: int) -> None:
        self.total = total_bytes

    def uploaded(self, delta: int) -> None:
        self.sent += delta

    def processing(self, task_id: str, files: int, percent: float) -> None:
        self.percents.append(percent)

    def finished(self, result: FileResult) -> None:
        self.results.append(result)


def test_folder_with_bad_files_keeps_going(client: Client, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_image(photos / "a.png", 24, 16)
    write_image(photos / "nested" / "b.jpg", 16, 16, seed=1)
    (photos / "notes.png").write_text("not an image")
    broken = png_bytes(16, 16)
    (photos / "broken.png").write_bytes(broken[:40] + b"\x00" * 40 + broken[80:])
    (photos / "gone.png").symlink_to(photos / "missing.png")
    out = tmp_path / "out"
    hooks = Recorder()

    report = upscale(
        [photos], recursive=True, model=FAST, scale=2, fmt="png", out_dir=out,
        thumbnails=True, client=client, reporter=hooks,
    )  # fmt: skip

    by_name = {r.source.name: r for r in report.results}
    assert by_name["a.png"].status == "done" and by_name["b.jpg"].status == "done"
    assert by_name["a.png"].output == out / f"a_upscayl_2x_{FAST}.png"
    assert by_name["b.jpg"].output == out / "nested" / f"b_upscayl_2x_{FAST}.png"
    assert dimensions(by_name["a.png"].output) == (48, 32)
    assert by_name["a.png"].thumbnail is not None and by_name["a.png"].thumbnail.exists()
    assert by_name["notes.png"].status == "skipped"
    assert "not a JPEG, PNG or WebP" in (by_name["notes.png"].reason or "")
    assert by_name["gone.png"].status == "skipped"
    assert "unreadable" in (by_name["gone.png"].reason or "")
    assert by_name["broken.png"].status == "failed"
    assert "broken.png" in (by_name["broken.png"].reason or "")
    assert not report.ok and [r.source.name for r in report.failed] == ["broken.png"]
    assert hooks.sent == hooks.total > 0 and hooks.percents[-1] == 100
    assert len(hooks.results) == len(report.results) == 5


def test_file_blamed_by_a_refused_batch_is_dropped(client: Client, tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.png", 16, 16)
    other = write_image(tmp_path / "other.webp", 16, 16, seed=2)
    # A header claiming 100k x 100k pixels: start-task refuses the whole batch (400).
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_bytes(16, 16)[:16] + (100_000).to_bytes(4, "big") * 2 + b"\0" * 60)
    report = upscale([good, huge, other], model=FAST, scale=2, client=client)
    by_name = {r.source.name: r for r in report.results}
    assert by_name["huge.png"].status == "failed"
    assert (by_name["huge.png"].reason or "").startswith("BAD_REQUEST")
    assert by_name["good.png"].output == tmp_path / f"good_upscayl_2x_{FAST}.jpg"
    assert by_name["other.webp"].status == "done"
    # The others still went together, in one batch task.
    assert by_name["good.png"].task_id == by_name["other.webp"].task_id is not None


def test_named_non_image_fails_the_run(client: Client, tmp_path: Path) -> None:
    text = tmp_path / "readme.txt"
    text.write_text("hello")
    report = upscale([text, tmp_path / "nope.png"], model=FAST, client=client)
    assert [r.status for r in report.results] == ["failed", "failed"]
    assert "no such file" in (report.results[1].reason or "")


def test_batches_of_batch_size(client: Client, tmp_path: Path) -> None:
    for n in range(3):
        write_image(tmp_path / f"{n}.png", 16, 16, seed=n)
    report = upscale([tmp_path], model=FAST, scale=2, client=client, batch_size=2)
    assert report.ok and len({r.task_id for r in report.results}) == 2
    assert client.get_history()["pagination"]["total"] == 2


def test_same_result_name_twice_gets_a_second_name(client: Client, tmp_path: Path) -> None:
    folder = tmp_path / "f2"
    write_image(folder / "a.jpg", 24, 16)
    write_image(folder / "a.png", 16, 16, seed=1)
    out = tmp_path / "out2"
    report = upscale([folder], model=FAST, scale=2, fmt="png", out_dir=out, client=client)
    by_name = {r.source.name: r for r in report.results}
    first, second = out / f"a_upscayl_2x_{FAST}.png", out / f"a_upscayl_2x_{FAST} (2).png"
    assert report.ok
    assert (by_name["a.jpg"].output, by_name["a.png"].output) == (first, second)
    assert (dimensions(first), dimensions(second)) == ((48, 32), (32, 32))

    # An earlier run's results are replaced, under the same names, not numbered on.
    first.write_bytes(b"stale")
    again = upscale([folder], model=FAST, scale=2, fmt="png", out_dir=out, client=client)
    assert [r.output for r in again.results] == [first, second]
    assert dimensions(first) == (48, 32)
    assert _visible(out) == {first, second}


def test_hostile_result_names_stay_in_the_output_folder(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    sources = tmp_path / "in"
    names = {
        "up.png": "../../escaped_by_server.txt",
        "abs.png": str(tmp_path / "abs" / "evil.png"),
        "ctl.png": "\x00\r\n",
        "dots.png": "..",
        "hidden.png": ".bashrc",
        "self.png": "self.png",  # its own input's name: never written over
    }
    for seed, name in enumerate(names):
        write_image(sources / name, 16, 16, seed=seed)
    originals = {name: (sources / name).read_bytes() for name in names}
    out = tmp_path / "deep" / "out"
    with (
        RenamingProxy(server.url, names) as proxy,
        Client(proxy.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale(
            [sources], model=FAST, scale=2, fmt="png", out_dir=out, thumbnails=True, client=api
        )
        beside = upscale([sources / "self.png"], model=FAST, scale=2, client=api)

    assert beside.ok and beside.results[0].output == sources / "self (2).png"
    assert report.ok, [r.reason for r in report.failed]
    outputs = {r.source.name: r.output for r in report.results}
    assert outputs == {
        "up.png": out / f"up_upscayl_2x_{FAST}.png",  # a server names images only
        "abs.png": out / "evil.png",
        "ctl.png": out / f"ctl_upscayl_2x_{FAST}.png",
        "dots.png": out / f"dots_upscayl_2x_{FAST}.png",
        "hidden.png": out / f"hidden_upscayl_2x_{FAST}.png",
        "self.png": out / "self.png",
    }
    assert all(dimensions(path) == (32, 32) for path in outputs.values() if path)
    assert {r.thumbnail for r in report.results} >= {out / "evil_thumb.webp"}
    written = {p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert written <= {sources / n for n in names} | {sources / "self (2).png"} | _visible(out)
    assert not (tmp_path / "abs").exists()
    assert {name: (sources / name).read_bytes() for name in names} == originals


@pytest.fixture(scope="module")
def five_per_task(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that takes at most 5 files per task (and says so in /capabilities)."""
    data = tmp_path_factory.mktemp("five") / "data"
    running = Server(data, workers=1, engine_threads=2, max_files_per_task=5)
    yield running.start()
    running.stop()


def test_batches_never_exceed_the_servers_files_per_task(
    five_per_task: Server, tmp_path: Path
) -> None:
    for n in range(12):
        write_image(tmp_path / f"{n:02}.png", 16, 16, seed=n)
    key = new_principal(five_per_task.ctx, credits=20)[0]
    with Client(five_per_task.url, key, poll=QUICK_POLL, retry=QUICK_RETRY) as api:
        report = upscale([tmp_path], model=FAST, scale=2, client=api)  # batch_size 50
        assert report.ok, [r.reason for r in report.failed]
        tasks = [r.task_id for r in report.results]
        assert sorted(tasks.count(t) for t in set(tasks)) == [2, 5, 5]
        assert api.get_history()["pagination"]["total"] == 3


def test_a_bad_key_stops_the_run_at_its_first_refusal(server: Server, tmp_path: Path) -> None:
    for n in range(12):
        write_image(tmp_path / f"{n:02}.png", 16, 16, seed=n)
    with (
        RenamingProxy(server.url, {}) as proxy,
        Client(proxy.url, "uc_wrong", poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale([tmp_path], model=FAST, client=api, upload_workers=4)
    assert len(report.results) == 12 and not report.ok
    assert all("UNAUTHORIZED" in (r.reason or "") for r in report.failed)
    assert len(report.failed) == 12
    # Only the uploads already under way when the first 401 came back were asked.
    assert proxy.hits.count("/get-upload-url") <= 4 and "/start-task" not in proxy.hits


class _SlowUplink(Client):
    """A stand-in for a slow uplink: each signed PUT after the first waits 2 s,
    so that a multipart upload is still under way when a later one is refused."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._puts = 0
        self._lock = threading.Lock()

    def put_upload(self, *args: Any, **kwargs: Any) -> str | None:
        with self._lock:
            self._puts += 1
            first = self._puts == 1
        if not first:
            time.sleep(2)
        return super().put_upload(*args, **kwargs)


def test_an_upload_cut_short_by_a_401_is_reported_as_not_sent(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """The big file's upload stops starting parts when the small one's 401
    stops the run: it was not sent because the run stopped, which is what it
    says (it used to say "upload failed: CANCELLED")."""
    big = big_png(tmp_path / "a-big.png", 36 * MIB)  # eight 5 MiB parts, four at a time
    small = write_image(tmp_path / "b-small.png", 16, 16)
    with (
        RenamingProxy(server.url, {}, unauthorized_upload="b-small.png") as proxy,
        _SlowUplink(proxy.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale([big, small], model=FAST, client=api, upload_workers=2)
    reasons = {r.source: r.reason or "" for r in report.results}
    assert reasons[big].startswith("not sent, the run stopped: UNAUTHORIZED"), reasons[big]
    assert reasons[small].startswith("UNAUTHORIZED") or reasons[small].startswith("not sent")
    assert "/start-task" not in proxy.hits


def test_files_uploaded_before_a_401_are_reported_as_not_started(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    first = write_image(tmp_path / "a.png", 16, 16)
    refused = write_image(tmp_path / "b-refused.png", 16, 16, seed=1)
    with (
        RenamingProxy(server.url, {}, unauthorized_upload="b-refused.png") as proxy,
        Client(proxy.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale([first, refused], model=FAST, client=api, upload_workers=1)
    reasons = {r.source: r.reason or "" for r in report.results}
    assert reasons[first].startswith("uploaded, not started, the run stopped: UNAUTHORIZED")
    assert reasons[refused].startswith("not sent, the run stopped: UNAUTHORIZED")
    assert "/start-task" not in proxy.hits


def test_no_credits_left_stops_starting_batches(server: Server, tmp_path: Path) -> None:
    for n in range(3):
        write_image(tmp_path / f"{n}.png", 16, 16, seed=n)
    key = new_principal(server.ctx, credits=1)[0]
    with (
        RenamingProxy(server.url, {}) as proxy,
        Client(proxy.url, key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale([tmp_path], model=FAST, scale=2, client=api, batch_size=1)
    assert [r.status for r in report.results if r.source.name == "0.png"] == ["done"]
    refused = {r.source.name: r.reason or "" for r in report.failed}
    assert refused.keys() == {"1.png", "2.png"}
    assert refused["1.png"].startswith("INSUFFICIENT_CREDITS")
    assert refused["2.png"].startswith("not sent, the run stopped: INSUFFICIENT_CREDITS")
    # The third file was neither uploaded nor offered to start-task.
    assert proxy.hits.count("/start-task") == 2 and proxy.hits.count("/get-upload-url") == 2


def test_a_folder_at_the_result_name_gets_the_next_name(client: Client, tmp_path: Path) -> None:
    image = write_image(tmp_path / "a.png", 16, 16)
    squatter = tmp_path / f"a_upscayl_2x_{FAST}.jpg"
    (squatter / "inside").mkdir(parents=True)
    report = upscale([image], model=FAST, scale=2, client=client)
    assert report.ok, report.results
    assert report.results[0].output == tmp_path / f"a_upscayl_2x_{FAST} (2).jpg"
    assert (squatter / "inside").is_dir()


def test_an_out_dir_that_is_a_file_raises_before_sending(client: Client, tmp_path: Path) -> None:
    image = write_image(tmp_path / "a.png", 16, 16)
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        upscale([image], model=FAST, out_dir=image, client=client)
    assert client.get_history()["pagination"]["total"] == 0


def test_a_thumbnail_that_cannot_be_fetched_leaves_the_result_done(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "a.png", 16, 16)
    with (
        RenamingProxy(server.url, {}, thumbnails_gone=True) as proxy,
        Client(proxy.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale([image], model=FAST, scale=2, thumbnails=True, client=api)
    [result] = report.results
    assert report.ok and result.status == "done"
    assert result.output is not None and result.output.stat().st_size > 0
    assert result.thumbnail is None
    assert (result.reason or "").startswith("thumbnail not saved: "), result.reason


def test_face_enhancement_the_server_has_not_is_refused_before_uploading(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    images = [write_image(tmp_path / f"{n}.png", 16, 16, seed=n) for n in range(2)]
    with (
        RenamingProxy(server.url, {}) as proxy,
        Client(proxy.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        assert (api.capabilities() or {})["faceEnhancement"] is False  # no face models here
        hooks = Recorder()
        report = upscale(images, model=FAST, face=True, client=api, reporter=hooks)
    assert hooks.total == 0  # no upload announced (a bar stuck at 0 % was drawn)
    reasons = [r.reason or "" for r in report.results]
    assert len(reasons) == 2 and not report.ok
    assert all(
        r.startswith("not sent, the run stopped: FACE_ENHANCEMENT_UNAVAILABLE") for r in reasons
    ), reasons
    assert "/get-upload-url" not in proxy.hits and "/start-task" not in proxy.hits


def test_ctrl_c_after_a_batch_was_started_names_its_task(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the second batch uploads: the first batch's task runs on,
    charged, and the interruption says which it is (it used to be known only
    once every batch was started, so "none" was printed)."""
    first = write_image(tmp_path / "a.png", 16, 16)
    second = write_image(tmp_path / "b.png", 16, 16, seed=1)
    real_put = Client.put_upload
    puts: list[int] = []

    def put_then_interrupt(self: Client, *args: Any, **kwargs: Any) -> Any:
        puts.append(1)
        if len(puts) == 2:
            raise KeyboardInterrupt
        return real_put(self, *args, **kwargs)

    monkeypatch.setattr(Client, "put_upload", put_then_interrupt)
    with pytest.raises(UpscaleInterrupted) as caught:
        upscale([first, second], model=FAST, scale=2, client=client, batch_size=1)
    assert isinstance(caught.value, KeyboardInterrupt)
    (task_id,) = caught.value.task_ids
    status = client.wait(task_id, timeout=60)
    assert status["status"] == "completed"
    assert [f["originalFileName"] for f in status["files"]] == ["a.png"]
    assert not list(tmp_path.glob("*_upscayl_*"))  # nothing was downloaded


def test_a_portal_page_in_place_of_a_status_is_waited_out(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """A 200 that is no JSON (a captive portal, a proxy's page) is an outage
    to poll through, not a crash that left every result undownloaded."""
    source = write_image(tmp_path / "a.png", 16, 16)
    with (
        RenamingProxy(server.url, {}, portal_pages=2) as proxy,
        Client(proxy.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale([source], model=FAST, scale=2, client=api)
        assert proxy.portal_pages == 0
    assert report.ok, [r.reason for r in report.failed]


def test_a_page_that_is_no_json_is_an_api_error(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    with (
        RenamingProxy(server.url, {}, portal_pages=1) as proxy,
        Client(proxy.url, api_key, retry=QUICK_RETRY) as api,
        pytest.raises(ApiError) as caught,
    ):
        api.get_task_status("30a89e69-c702-4247-9905-f0a53dfa45ab")
    assert caught.value.code == "BAD_RESPONSE" and "text/html" in caught.value.message


def test_a_503_is_retried_after_its_retry_after(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """Backoff alone (here at most 0.2 s a try) would spend every attempt
    before the second the server asked for."""
    with (
        RenamingProxy(server.url, {}, upload_unavailable=1.5) as proxy,
        Client(proxy.url, api_key, retry=QUICK_RETRY) as api,
    ):
        link = api.get_upload_url("a.png", "image/png", 10)
    assert link["fileName"].endswith("a.png")


def test_history_that_never_moves_back_in_time_ends(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """A server repeating one nextOffset would be paged forever."""
    with (
        RenamingProxy(server.url, {}, history="stuck") as proxy,
        Client(proxy.url, api_key, retry=QUICK_RETRY) as api,
    ):
        api.start_task(file=("a.png", png_bytes(16, 16)), model=FAST, scale=2)
        items = list(api.iter_history())
        assert len(items) <= 2 and proxy.hits.count("/get-upscayl-history") <= 2


def test_an_hourly_start_limit_used_up_stops_the_run(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """Every later batch would meet the same 429: none is uploaded for nothing."""
    for n in range(3):
        write_image(tmp_path / f"{n}.png", 16, 16, seed=n)
    with (
        RenamingProxy(server.url, {}, start_throttled=True) as proxy,
        Client(proxy.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale([tmp_path], model=FAST, client=api, batch_size=1)
    assert len(report.failed) == 3
    assert all("RATE_LIMIT_EXCEEDED" in (r.reason or "") for r in report.failed)
    assert proxy.hits.count("/get-upload-url") == 1 and proxy.hits.count("/start-task") == 1


def test_an_unreachable_server_stops_the_run_after_one_files_retries(tmp_path: Path) -> None:
    """Not each file's five tries in turn: a quarter of an hour for 1000 files."""
    for n in range(6):
        write_image(tmp_path / f"{n}.png", 16, 16, seed=n)
    with socket.socket() as probe:  # a loopback port with no listener
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    attempts: list[str] = []

    def count(event: RetryEvent) -> None:
        attempts.append(event.path)

    with Client(url, "uc_any", retry=QUICK_RETRY, on_retry=count) as api:
        report = upscale([tmp_path], model=FAST, client=api, upload_workers=1)
    assert len(report.failed) == 6
    assert all("not sent, the run stopped: CONNECTION_ERROR" in (r.reason or "")
               for r in report.failed)  # fmt: skip
    assert attempts.count("/get-upload-url") == QUICK_RETRY.attempts - 1


def test_a_later_run_never_replaces_another_sources_result(client: Client, tmp_path: Path) -> None:
    """Two folders with an IMG_0001.jpg each, upscaled one after the other
    into one folder: the second used to replace the first's result, as did
    ``a.png`` alone replace ``a.jpg``'s after ``a.jpg a.png -f png``. Each
    run still refreshes its own earlier results in place."""
    out = tmp_path / "upscaled"
    old = write_image(tmp_path / "trip2023" / "IMG_0001.jpg", 20, 10, seed=1)
    new = write_image(tmp_path / "trip2024" / "IMG_0001.jpg", 30, 30, seed=2)
    name, twin = f"IMG_0001_upscayl_2x_{FAST}.jpg", f"IMG_0001_upscayl_2x_{FAST} (2).jpg"
    options: dict[str, Any] = {"model": FAST, "scale": 2, "out_dir": out, "client": client}
    assert upscale([old.parent], **options).results[0].output == out / name
    assert upscale([new.parent], **options).results[0].output == out / twin
    assert upscale([new.parent], **options).results[0].output == out / twin  # its own
    assert (dimensions(out / name), dimensions(out / twin)) == ((40, 20), (60, 60))
    assert _visible(out) == {out / name, out / twin}
    # Nothing else is left behind: no write probe, no temporary manifest.
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".upscayl-results.json"]

    pair = tmp_path / "pair"
    a_jpg, a_png = write_image(pair / "a.jpg", 24, 16), write_image(pair / "a.png", 16, 16, seed=3)
    result, result2 = pair / f"a_upscayl_2x_{FAST}.png", pair / f"a_upscayl_2x_{FAST} (2).png"
    both = upscale([a_jpg, a_png], model=FAST, scale=2, fmt="png", client=client)
    assert [r.output for r in both.results] == [result, result2]
    alone = upscale([a_png], model=FAST, scale=2, fmt="png", client=client)
    assert alone.results[0].output == result2
    assert (dimensions(result), dimensions(result2)) == ((48, 32), (32, 32))


def test_one_path_given_as_a_string_is_one_path(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``upscale("./a.png")`` iterated the string: "." and "/" became folders,
    and every image in them was uploaded and charged."""
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "a.png", 16, 16)
    write_image(tmp_path / "b.png", 16, 16, seed=1)
    report = upscale("./a.png", model=FAST, scale=2, client=client)
    assert [(r.source, r.status) for r in report.results] == [(Path("a.png"), "done")]
    report = upscale(Path("b.png"), model=FAST, scale=2, client=client)
    assert [(r.source, r.status) for r in report.results] == [(Path("b.png"), "done")]
    assert client.get_history()["pagination"]["total"] == 2


def test_downloads_ride_out_a_short_outage(server: Server, api_key: str, tmp_path: Path) -> None:
    """The tasks finished (and were charged), then the store serving their
    links was away for 3 s: the client's few retries (under a second here)
    failed every result. The proxy that drops the downloads stands in for
    the store's outage; the server is real."""
    images = [write_image(tmp_path / f"{n}.png", 16, 16, seed=n) for n in range(2)]
    with (
        RenamingProxy(server.url, {}, download_outage=3) as proxy,
        Client(proxy.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale(images, model=FAST, scale=2, client=api)
    assert report.ok, [r.reason for r in report.failed]
    assert proxy.dropped_downloads > QUICK_RETRY.attempts  # more than one download's retries
    assert all(r.output is not None and dimensions(r.output) == (32, 32) for r in report.results)


def test_a_download_given_up_on_says_where_the_result_still_is(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """Past the outage the run waits out (1 s here), the file fails with the
    task's id and the command that still finds its result. The proxy stands
    in for the store's outage."""
    image = write_image(tmp_path / "a.png", 16, 16)
    patient = PollSchedule(initial=0.1, maximum=0.5, burst=90, outage_seconds=1)
    with (
        RenamingProxy(server.url, {}, download_outage=60) as proxy,
        Client(proxy.url, api_key, poll=patient, retry=QUICK_RETRY) as api,
    ):
        [result] = upscale([image], model=FAST, scale=2, client=api).results
    assert result.status == "failed" and result.task_id is not None
    reason = result.reason or ""
    assert reason.startswith("download failed: CONNECTION_ERROR"), reason
    assert f"`upscayl-cloud client status {result.task_id}`" in reason
    assert not list(tmp_path.glob("*_upscayl_*"))


def test_a_persistent_503_stops_the_run_after_one_files_retries(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """A server whose store or database is away (or whose disk is full)
    answers 503 with Retry-After: each of 1000 files spent its tries on it,
    83 minutes. The proxy's 503s stand in for such a server."""
    for n in range(6):
        write_image(tmp_path / f"{n}.png", 16, 16, seed=n)
    with (
        RenamingProxy(server.url, {}, upload_unavailable=120) as proxy,
        Client(proxy.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale([tmp_path], model=FAST, client=api, upload_workers=1)
    assert len(report.failed) == 6
    assert all((r.reason or "").startswith("not sent, the run stopped: SERVICE_UNAVAILABLE")
               for r in report.failed), [r.reason for r in report.failed]  # fmt: skip
    assert proxy.hits.count("/get-upload-url") == QUICK_RETRY.attempts
    assert "/start-task" not in proxy.hits


def test_a_file_that_failed_on_its_own_keeps_its_reason_when_the_run_stops(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """b.png, removed while the run began, failed for its own reason; a.png's
    401 then stopped the run, and b.png was reported "not sent, the run
    stopped". The 401 is the proxy's stand-in for a key revoked mid-run."""
    refused = write_image(tmp_path / "a-refused.png", 16, 16)
    gone = write_image(tmp_path / "b-gone.png", 16, 16, seed=1)

    class RemoveOne(Recorder):
        def uploading(self, total_bytes: int) -> None:
            gone.unlink()  # after the files were found, before they are sent

    with (
        RenamingProxy(server.url, {}, unauthorized_upload="a-refused.png") as proxy,
        Client(proxy.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale([refused, gone], model=FAST, client=api, reporter=RemoveOne())
    reasons = {r.source: r.reason or "" for r in report.results}
    assert reasons[refused].startswith("not sent, the run stopped: UNAUTHORIZED"), reasons
    assert reasons[gone].startswith("upload failed: FileNotFoundError"), reasons


def test_an_unwritable_destination_is_refused_before_anything_is_sent(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """Inputs on a read-only folder, upscaled in place: the task completed,
    was charged, then every download failed. Now nothing is sent: a
    ``PermissionError`` in Python, a usage error (2) in the shell. The
    folder is made read-only for real (``read_only``)."""
    photos = tmp_path / "photos"
    image = write_image(photos / "a.png", 16, 16)
    run = CliRunner(env={"UPSCAYL_URL": server.url, "UPSCAYL_API_KEY": api_key, "COLUMNS": "300"})
    with read_only(photos), Client(server.url, api_key) as api:
        with pytest.raises(UnwritableOutputError, match="cannot be written") as refused:
            upscale([photos], model=FAST, client=api)
        assert isinstance(refused.value, PermissionError) and str(photos) in str(refused.value)
        shell = run.invoke(app, ["client", "upscale", str(image), "-m", FAST])
        assert shell.exit_code == 2, shell.output
        assert "results cannot be written there" in " ".join(shell.output.split())
        assert api.get_history()["pagination"]["total"] == 0  # nothing charged
    assert sorted(p.name for p in photos.iterdir()) == ["a.png"]  # no probe left behind


def test_a_destination_no_file_can_be_made_in_is_refused_for_anyone(
    client: Client, tmp_path: Path
) -> None:
    """The same refusal where no folder can be made read-only (no chattr as
    root): /proc/self takes no new file, whoever asks."""
    write_image(tmp_path / "a.png", 16, 16)
    with pytest.raises(UnwritableOutputError, match="/proc/self: results cannot be written"):
        upscale([tmp_path / "a.png"], model=FAST, out_dir=Path("/proc/self"), client=client)
    assert client.get_history()["pagination"]["total"] == 0


def test_a_file_in_the_way_of_a_subfolder_is_refused_before_anything_is_sent(
    client: Client, tmp_path: Path
) -> None:
    """``-o out`` is a folder, but ``out/nested`` (where nested/b.png's result
    goes) is a file: found only at that download, after the charge."""
    write_image(tmp_path / "in" / "nested" / "b.png", 16, 16)
    out = tmp_path / "out"
    out.mkdir()
    (out / "nested").write_text("a file")
    with pytest.raises(NotADirectoryError, match="nested"):
        upscale([tmp_path / "in"], recursive=True, model=FAST, out_dir=out, client=client)
    assert client.get_history()["pagination"]["total"] == 0


def _start_then_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C just as start-task's answer is on its way back: the server
    has created (and charged) the task, the client never learns its id.
    The exact moment is the stand-in (a real SIGINT cannot be aimed that
    precisely); the server, and the task it creates, are real."""
    real = Client.start_task

    def start_then_interrupt(self: Client, *args: Any, **kwargs: Any) -> str:
        real(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "start_task", start_then_interrupt)


def test_ctrl_c_while_a_task_is_started_says_it_may_exist(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to say that no task was started."""
    image = write_image(tmp_path / "a.png", 16, 16)
    _start_then_interrupt(monkeypatch)
    with pytest.raises(KeyboardInterrupt) as caught:
        upscale([image], model=FAST, scale=2, client=client)
    assert isinstance(caught.value, UpscaleInterrupted), caught.value
    assert caught.value.task_ids == [] and caught.value.maybe_started == [image]
    assert "client history" in str(caught.value)
    assert client.get_history()["pagination"]["total"] == 1  # it does exist


def test_ctrl_c_while_a_task_is_started_in_the_shell(
    server: Server, api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = write_image(tmp_path / "a.png", 16, 16)
    _start_then_interrupt(monkeypatch)
    run = CliRunner(env={"UPSCAYL_URL": server.url, "UPSCAYL_API_KEY": api_key, "COLUMNS": "300"})
    result = run.invoke(app, ["client", "upscale", str(image), "-m", FAST, "-s", "2"])
    said = " ".join(result.output.split())
    assert result.exit_code == 130, result.output
    assert "no task was started" not in said
    assert f"while a task was being started for {image}" in said and "client history" in said


def test_ctrl_c_while_files_are_collected_closes_the_runs_client(
    server: Server, api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C in a long walk of folders raised a plain KeyboardInterrupt
    and left the client ``upscale()`` made open. Raising it from the walk is
    the stand-in for a Ctrl-C landing there."""
    closed: list[Client] = []
    real_close = Client.close

    def walk_interrupted(*_args: object) -> list[object]:
        raise KeyboardInterrupt

    def close(self: Client) -> None:
        closed.append(self)
        real_close(self)

    monkeypatch.setattr("upscayl_cloud.client.batch.collect", walk_interrupted)
    monkeypatch.setattr(Client, "close", close)
    with pytest.raises(KeyboardInterrupt) as caught:
        upscale([tmp_path], model=FAST, base_url=server.url, api_key=api_key)
    assert isinstance(caught.value, UpscaleInterrupted) and caught.value.task_ids == []
    assert len(closed) == 1
