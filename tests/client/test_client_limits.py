"""A server with tight limits of its own, met for real: complete-multipart-upload
allowed once an hour, and download links that expire after 5 seconds."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.context import new_principal
from support.server import Server
from tests.client.helpers import (
    FAST,
    MIB,
    QUICK_POLL,
    QUICK_RETRY,
    RenamingProxy,
    big_png,
    dimensions,
    write_image,
)
from upscayl_cloud.client import ApiError, Client, FileResult, upscale
from upscayl_cloud.client.uploads import state_path


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        tmp_path_factory.mktemp("tight") / "data",
        workers=1,
        engine_threads=2,
        multipart_part_bytes=5 * MIB,
        multipart_threshold_bytes=5 * MIB,
        download_url_ttl_seconds=5,
        rate_limits=json.dumps({"complete-multipart-upload": "1 per hour"}),
    )
    yield running.start()
    running.stop()


def test_a_spent_completion_limit_stops_further_multipart_uploads(
    tight: Server, tmp_path: Path
) -> None:
    """Once completion is refused for the hour, each further large file
    used to upload all its parts, then fail the same way: now each is sent
    in one PUT. The client's own threshold (64 MiB) is left as it is: the
    server's (5 MiB) makes these files multipart."""
    for name in ("a", "b", "c"):
        big_png(tmp_path / f"{name}.png", 11 * MIB)  # three 5 MiB parts each
    small = write_image(tmp_path / "d-small.png", 16, 16)
    key = new_principal(tight.ctx, credits=20)[0]
    with (
        RenamingProxy(tight.url, {}) as proxy,
        Client(proxy.url, key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale([tmp_path], model=FAST, scale=2, client=api, upload_workers=1)
    assert proxy.hits.count("/get-upload-url") == 4
    assert proxy.hits.count("/complete-multipart-upload") == 2  # a's, b's: not c's
    by_name = {r.source.name: r for r in report.results}
    assert {by_name[n].status for n in ("a.png", "c.png", "d-small.png")} == {"done"}
    refused = by_name["b.png"].reason or ""
    assert refused.startswith("upload failed: RATE_LIMIT_EXCEEDED"), refused
    assert "its parts are kept" in refused and state_path(tmp_path / "b.png").exists()
    assert not state_path(tmp_path / "c.png").exists() and small.exists()


class _Downloads(Client):
    """Records the statuses of the downloads that were refused."""

    refused: list[int]

    def download(self, url: str, dest: Path, size: int | None = None) -> Path:
        try:
            return super().download(url, dest, size)
        except ApiError as exc:
            self.refused.append(exc.status_code)
            raise


class _Dawdles:
    """Progress hooks that take 6 s over a finished task: the links it came
    with (valid for 5 s) have expired by the time they are downloaded."""

    def uploading(self, total_bytes: int) -> None: ...
    def uploaded(self, delta: int) -> None: ...
    def finished(self, result: FileResult) -> None: ...

    def processing(self, task_id: str, files: int, percent: float) -> None:
        if percent >= 100:
            time.sleep(6)


def test_an_expired_download_link_is_signed_again_through_a_fresh_status(
    tight: Server, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "a.png", 16, 16)
    key = new_principal(tight.ctx, credits=5)[0]
    with _Downloads(tight.url, key, poll=QUICK_POLL, retry=QUICK_RETRY) as api:
        api.refused = []
        report = upscale([image], model=FAST, scale=2, client=api, reporter=_Dawdles())
    assert report.ok, [r.reason for r in report.failed]
    [result] = report.results
    assert api.refused == [410]  # the expired link, then the fresh one worked
    assert result.output is not None and dimensions(result.output) == (32, 32)
