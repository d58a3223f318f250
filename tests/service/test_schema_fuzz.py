"""Property-based requests generated from the OpenAPI schema: no 5xx, ever, and every answer
as the document says (status codes, content types, bodies, headers)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.service.conftest import Server, make_settings

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.integration
def test_no_server_errors(tiny_checkpoint, tmp_path):
    srv = Server(
        make_settings(tiny_checkpoint, tmp_path, request_timeout_s=20, max_steps=4)
    ).start()
    try:
        schema = schemathesis.openapi.from_url(f"{srv.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 16
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=5,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case):
                case.call_and_validate(checks=CHECKS, timeout=30)

            check()
    finally:
        srv.stop()
