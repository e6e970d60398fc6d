"""Every path, field and enum of the seed spec is in the served OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from support.app import client_for
from support.context import SHARED_SPEC_PATH, SPEC_PATH, make_settings

Doc = dict[str, Any]


def _resolve(doc: Doc, schema: Any) -> Any:
    while isinstance(schema, dict) and "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _walk(doc: Doc, schema: Any, where: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """(field path, enum or None) for every property reachable from ``schema``."""
    schema = _resolve(doc, schema)
    if not isinstance(schema, dict) or depth > 12:
        return
    if "enum" in schema:
        yield where, frozenset(map(str, schema["enum"]))
    if "const" in schema:  # pydantic writes a one-value enum as const
        yield where, frozenset([str(schema["const"])])
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            yield from _walk(doc, sub, where, depth + 1)
    if "items" in schema:
        yield from _walk(doc, schema["items"], where + "[]", depth + 1)
    for name, sub in schema.get("properties", {}).items():
        yield f"{where}.{name}", None
        yield from _walk(doc, sub, f"{where}.{name}", depth + 1)


def _facts(doc: Doc) -> tuple[set[str], dict[str, set[str]]]:
    fields: set[str] = set()
    enums: dict[str, set[str]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            base = f"{method.upper()} {path}"
            fields.add(base)
            sources = []
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                sources.append((f"{base} request {media}", content.get("schema")))
            for status, response in op.get("responses", {}).items():
                response = _resolve(doc, response)
                for content in response.get("content", {}).values():
                    sources.append((f"{base} {status}", content.get("schema")))
            for where, schema in sources:
                fields.add(where)
                for field, enum in _walk(doc, schema, where):
                    fields.add(field)
                    if enum is not None:
                        enums.setdefault(field, set()).update(enum)
    return fields, enums


def test_served_document_covers_the_seed_spec(client: TestClient) -> None:
    seed = yaml.safe_load(SPEC_PATH.read_text())
    served = client.get("/openapi.json").json()
    seed_fields, seed_enums = _facts(seed)
    served_fields, served_enums = _facts(served)
    assert sorted(seed_fields - served_fields) == []
    for field, values in seed_enums.items():
        assert values <= served_enums.get(field, set()), field
    assert served["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }


def test_the_documented_file_size_bound_is_this_servers(client: TestClient, tmp_path: Path) -> None:
    """The spec's 100 MB by default, the configured limit otherwise: the
    request model leaves the bound to the service, and a generated client
    read none from the served document."""

    def maximum(document: dict) -> int:
        return document["components"]["schemas"]["UploadUrlCreate"]["properties"]["fileSize"][
            "maximum"
        ]

    assert maximum(client.get("/openapi.json").json()) == 104_857_600
    with client_for(make_settings(tmp_path / "big", max_upload_bytes=2**30)) as big:
        assert maximum(big.get("/openapi.json").json()) == 2**30


def test_no_interactive_docs_pulling_scripts_from_a_cdn(client: TestClient) -> None:
    """/docs and /redoc would load unpinned CDN scripts into the origin where
    the web page keeps its key; the document itself is served."""
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 200


def test_the_carried_spec_is_the_workspaces_original() -> None:
    """The copy in spec/ must not drift from the contract it stands for."""
    if not SHARED_SPEC_PATH.is_file():
        pytest.skip(f"no original at {SHARED_SPEC_PATH} (a clone on its own)")
    assert SPEC_PATH.read_bytes() == SHARED_SPEC_PATH.read_bytes()
