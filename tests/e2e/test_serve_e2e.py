"""``serve`` with zero configuration, and the operations endpoints."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from support.client import ApiClient, file_entry, make_client
from support.images import png_bytes
from support.server import Server, free_port


def test_first_start_prints_a_working_key_once(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", workers=0, first_key_credits=7).start()
    try:
        found = re.search(r"X-API-Key: (uc_\S+)", server.log())
        assert found and server.url.replace("http://", "") in server.log()
        api = ApiClient(server.url, found.group(1))
        assert api.post("/get-upscayl-history").status_code == 200
    finally:
        server.stop()
    again = Server(tmp_path / "data", workers=0).start()
    try:
        assert len(re.findall(r"X-API-Key:", again.log())) == 1
        assert (tmp_path / "data" / "upscayl.db").exists()
    finally:
        again.stop()


def test_health_ready_and_metrics(server: Server) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["workers"] is True
    api = make_client(server)
    link = api.upload("m.png", png_bytes(16, 16))
    task = api.start([file_entry(link)], model="quick-clear-4x", scale="2").json()["data"]
    api.wait(task["taskId"])
    text = httpx.get(server.url + "/metrics").text
    assert 'upscayl_tasks{status="completed"}' in text
    assert "upscayl_queue_depth" in text
    assert 'upscayl_processing_seconds_count{model="quick-clear-4x"}' in text
    # libvips's info messages (loaders, work-file paths) stay out of the log.
    assert " INFO upscayl_cloud." in server.log() and " INFO pyvips" not in server.log()


def _processed_count(metrics_text: str) -> int:
    found = re.search(
        r'upscayl_processing_seconds_count\{model="quick-clear-4x"\} (\S+)', metrics_text
    )
    return int(float(found.group(1))) if found else 0


def test_separate_worker_processes_share_the_queue(tmp_path: Path) -> None:
    """Each worker process serves its own metrics (its processing times are
    observed nowhere else): together they count every file once."""
    import signal

    api_only = Server(tmp_path / "data", workers=0).start()
    # No workers of its own: no workers check, rather than a "true" it never made.
    assert httpx.get(api_only.url + "/readyz").json()["checks"] == {
        "database": True,
        "storage": True,
    }
    ports = [free_port(), free_port()]
    workers = [api_only.start_worker(threads=1, worker_metrics_port=port) for port in ports]
    try:
        api = make_client(api_only)
        links = [api.upload(f"{i}.png", png_bytes(16, 16)) for i in range(4)]
        ids = [
            api.start([file_entry(link)], model="quick-clear-4x", scale="2").json()["data"][
                "taskId"
            ]
            for link in links
        ]
        assert all(api.wait(task_id)["status"] == "completed" for task_id in ids)
        scraped = [httpx.get(f"http://127.0.0.1:{port}/metrics").text for port in ports]
        assert sum(_processed_count(text) for text in scraped) == 4
        # The task counts come from the API processes alone.
        assert not any("upscayl_tasks{" in text for text in scraped)
        assert _processed_count(httpx.get(api_only.url + "/metrics").text) == 0
        for process in workers:
            process.send_signal(signal.SIGTERM)
        assert [process.wait(timeout=30) for process in workers] == [0, 0]
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
        api_only.stop()
