"""get-upload-url's part links on the local store, through the real app: each
takes at most its share of the planned split (full parts, then the
remainder), so a client granted a few bytes cannot park more in its parts."""

from __future__ import annotations

from fastapi.testclient import TestClient

from support.context import new_principal


def test_a_part_link_takes_no_more_than_its_share(client: TestClient) -> None:
    headers = {"X-API-Key": new_principal(client.app.state.ctx)[0]}
    body = {"originalFileName": "a.png", "fileType": "image/png", "fileSize": 1,
            "multipart": True}  # fmt: skip
    link = client.post("/get-upload-url", json=body, headers=headers).json()["data"]
    [part] = link["parts"]
    larger = client.put(part["uploadURL"], content=b"x" * (1 << 20))
    assert larger.status_code == 403, larger.text
    exact = client.put(part["uploadURL"], content=b"x")
    assert exact.status_code == 200, exact.text


def test_the_split_is_full_parts_then_the_remainder(client: TestClient) -> None:
    """Every part but the last is ``partSize``; the last holds what is left."""
    settings = client.app.state.ctx.settings
    headers = {"X-API-Key": new_principal(client.app.state.ctx)[0]}
    size = 2 * settings.multipart_part_bytes + 3
    body = {"originalFileName": "a.png", "fileType": "image/png", "fileSize": size,
            "multipart": True}  # fmt: skip
    link = client.post("/get-upload-url", json=body, headers=headers).json()["data"]
    assert [p["partNumber"] for p in link["parts"]] == [1, 2, 3]
    last = link["parts"][-1]["uploadURL"]
    assert client.put(last, content=b"1234").status_code == 403
    assert client.put(last, content=b"12").status_code == 403  # exact, as S3 signs it
    assert client.put(last, content=b"123").status_code == 200
