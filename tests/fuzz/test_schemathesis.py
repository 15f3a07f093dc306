"""Property-based fuzzing of every documented operation (schemathesis + hypothesis).

For each operation of the api's OpenAPI document, up to 20 generated requests — valid
ones and deliberately invalid ones (wrong types, missing fields, out-of-range values) —
are sent to the api served for real, authenticated as a funded client. Every answer
must not be a 5xx ("No error ever answers 500 for bad input"), and must be documented:
its status code for that operation (`status_code_conformance`), its content type
(`content_type_conformance`: errors are `application/problem+json`) and its body
(`response_schema_conformance`). The document is FastAPI's, completed by
`brokerx_api.openapi` (problem+json 422s, 401s, 503s, the domain errors of API.md).
hypothesis shrinks a failure to its smallest request, which the report shows.

Each generated request is also sent "poisoned", once per string in its body, query
and path, with a NUL character in that one string; and every query and path parameter
is also tried alone with a NUL. PostgreSQL refuses NUL in text, so such input must be
answered 4xx, never reach the database unchecked.

`/health` is left out: with no matching or worker running it rightly answers 503.
`FUZZ_EXAMPLES=200` generates more per operation; `FUZZ_STRICT=0` leaves out the
status-code and content-type checks (no 5xx and documented bodies only).
schemathesis' own pytest plugin does not run under pytest 9, so the operations are
parametrized here from the OpenAPI document of `create_app()` (built without I/O).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.conftest import LiveApi

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
EXAMPLES_PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES", "20"))
CHECKS = [not_a_server_error, response_schema_conformance]
if os.environ.get("FUZZ_STRICT", "1") != "0":
    CHECKS += [status_code_conformance, content_type_conformance]
EXCLUDED = {"GET /health"}


def _schema() -> Any:
    from brokerx_api.app import create_app
    from brokerx_api.settings import ApiSettings

    document = create_app(ApiSettings(log_json=True, log_level="WARNING")).openapi()
    return schemathesis.openapi.from_dict(document)


SCHEMA = _schema()
OPERATIONS = {
    operation.label: operation
    for operation in (result.ok() for result in SCHEMA.get_all_operations())
    if operation.label not in EXCLUDED
}


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_server_error_and_documented_responses(
    label: str, live_api: LiveApi, bearer: str
) -> None:
    operation = OPERATIONS[label]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=cases)
    def exchange(case: Any) -> None:
        headers = {"Authorization": f"Bearer {bearer}"}
        case.call_and_validate(base_url=live_api.url, headers=headers, checks=CHECKS, timeout=30)
        for nul in poisoned(case):
            nul.call_and_validate(
                base_url=live_api.url, headers=headers, checks=[not_a_server_error], timeout=30
            )

    exchange()


def _string_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Where the strings are in a JSON-like value (dict keys / list indexes)."""
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _string_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _string_paths(v, (*path, i))]
    return []


def _with_nul(value: Any, path: tuple[Any, ...]) -> Any:
    """A copy of `value` whose string at `path` carries a NUL after its first character."""
    if not path:
        return value[:1] + "\x00" + value[1:]
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: _with_nul(v, rest) if k == head else v for k, v in value.items()}
    return [_with_nul(v, rest) if i == head else v for i, v in enumerate(value)]


def poisoned(case: Any, limit: int = 12) -> list[Any]:
    """Copies of `case`, each with a NUL in one of its body, query or path strings (one
    string at a time, so the other fields stay valid and the NUL reaches deep code)."""
    variants = []
    for attribute in ("body", "query", "path_parameters"):
        value = getattr(case, attribute, None)
        if not isinstance(value, dict | list | str):
            continue
        for path in _string_paths(value)[:limit]:
            parts = {
                "body": case.body if isinstance(case.body, dict | list | str) else None,
                "query": case.query,
                "path_parameters": case.path_parameters,
            }
            parts[attribute] = _with_nul(value, path)
            variants.append(
                case.operation.Case(
                    method=case.method,
                    headers=dict(case.headers or {}),
                    media_type=case.media_type,
                    **{k: v for k, v in parts.items() if v is not None},
                )
            )
    return variants[:limit]


PLACEHOLDERS = {"symbol": "AAPL", "order_id": "00000000-0000-4000-8000-000000000000"}
PARAMETERS = sorted(
    (label, parameter["in"], parameter["name"])
    for label, operation in OPERATIONS.items()
    for parameter in operation.definition.raw.get("parameters", [])
    if parameter["in"] in ("query", "path")
)


@pytest.mark.parametrize(("label", "where", "name"), PARAMETERS)
def test_nul_in_a_parameter_is_never_a_server_error(
    label: str, where: str, name: str, live_api: LiveApi, bearer: str
) -> None:
    """Every query and path parameter alone set to a string holding a NUL: a 4xx."""
    method, path = label.split(" ", 1)
    value = "A\x00B"
    for placeholder, valid in PLACEHOLDERS.items():
        chosen = value if (where, name) == ("path", placeholder) else valid
        path = path.replace("{" + placeholder + "}", quote(chosen, safe=""))
    params = {name: value} if where == "query" else None
    response = httpx.request(
        method,
        live_api.url + path,
        params=params,
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=30,
        trust_env=False,
    )
    assert response.status_code < 500, (
        f"{label} with {where} parameter {name}={value!r}: {response.status_code} {response.text}"
    )
