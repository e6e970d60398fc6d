"""Property-based conformance: the seed spec's own schemathesis cases against a
running server. No 5xx, and every response matches the spec (status code,
content type, headers, body schema), and no operation works without a key.

Positive and negative data, ~20 examples per operation and mode, to keep the
suite quick. The "data accepted/rejected" checks are left out on purpose:
schema-valid requests are legitimately refused when they name files that were
never uploaded, which only the business rules (not the schema) can know.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from support.context import SPEC_PATH, new_principal
from support.server import Server

CHECKS = [
    not_a_server_error,
    ignored_auth,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SCHEMA = schemathesis.openapi.from_path(SPEC_PATH)
#: Examples per operation and mode; raise it (e.g. FUZZ_EXAMPLES=300) for a deeper run.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        tmp_path_factory.mktemp("fuzz") / "data", workers=0, rate_limits_enabled="false"
    ).start()
    yield running
    running.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_conforms_to_the_seed_spec(
    fuzz_server: Server, operation: schemathesis.APIOperation, mode: GenerationMode
) -> None:
    key = new_principal(fuzz_server.ctx, credits=1000)[0]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        headers = {"X-API-Key": key}
        response = case.call(base_url=fuzz_server.url, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()
