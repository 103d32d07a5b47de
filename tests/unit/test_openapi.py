"""What the API tells about itself: its OpenAPI document (valid, described, honest about errors)
and its start line."""

from typing import Any

import pytest
from openapi_spec_validator import validate

from api.main import create_app, startup_line
from api.openapi import WHY
from core.settings import ApiSettings, BrokerSettings, DatabaseSettings, Settings

PUBLIC_URL = "https://orchestrator.example.com"
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    settings = Settings(api=ApiSettings(public_url=PUBLIC_URL + "/"))
    return create_app(settings).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, operation) for path, item in document["paths"].items()
            for method, operation in item.items() if method in METHODS]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    # Given the API's document / When it is validated / Then it is valid OpenAPI
    validate(document)


def test_servers_is_the_public_url(document: dict[str, Any]) -> None:
    # Given API_PUBLIC_URL with a trailing slash / Then `servers` names it without one
    assert [server["url"] for server in document["servers"]] == [PUBLIC_URL]


def test_every_operation_has_an_id_a_summary_and_a_description(document: dict[str, Any]) -> None:
    # Given every operation / Then each is named, summarised and described
    missing = [(method, path) for method, path, op in operations(document)
               if not (op.get("operationId") and op.get("summary") and op.get("description"))]
    assert missing == []


def test_every_parameter_and_body_field_is_described(document: dict[str, Any]) -> None:
    # Given every parameter and every field of every request body
    undescribed = []
    for method, path, op in operations(document):
        undescribed += [f"{method} {path} {p['name']}" for p in op.get("parameters", [])
                        if not p.get("description")]
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        schema = resolve(document, body.get("schema", {}))
        undescribed += [f"{method} {path} body.{name}"
                        for name, field in schema.get("properties", {}).items()
                        if not field.get("description")]
    # Then none is left without a description
    assert undescribed == []


def test_errors_are_documented_with_one_body_and_only_known_codes(
        document: dict[str, Any]) -> None:
    # Given every error answer the document lists
    for method, path, op in operations(document):
        for code, answer in op["responses"].items():
            if int(code) < 400 or path == "/ready":
                continue
            # Then it is one of the codes the API answers, with the one error body
            assert int(code) in WHY, (method, path, code)
            schema = answer["content"]["application/json"]["schema"]
            assert schema["$ref"].endswith("/ErrorBody"), (method, path, code)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_only_routes_with_inputs_answer_422_and_only_body_routes_400(
        document: dict[str, Any]) -> None:
    # Given every operation
    for method, path, op in operations(document):
        codes = set(op["responses"])
        takes_input = bool(op.get("requestBody")) or any(
            p["in"] in ("query", "header") for p in op.get("parameters", []))
        # Then a 422 is listed exactly where there is something to validate, a 400 where a
        # body is parsed, and a 401 wherever a key is needed
        assert ("422" in codes) == takes_input, (method, path)
        assert ("400" in codes) == bool(op.get("requestBody")), (method, path)
        needs_key = bool(op.get("security")) and {} not in op["security"]
        assert ("401" in codes) == needs_key, (method, path)


def test_the_events_stream_and_the_ready_503_are_declared(document: dict[str, Any]) -> None:
    # Given the events route and /ready
    events = document["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]
    ready = document["paths"]["/ready"]["get"]["responses"]
    # Then the SSE media type and the not-ready answer are in the document
    assert set(events["content"]) == {"application/json", "text/event-stream"}
    assert resolve(document, ready["503"]["content"]["application/json"]["schema"])[
        "title"] == "Readiness"


def test_the_start_line_hides_passwords() -> None:
    # Given settings whose URLs carry passwords
    settings = Settings(database=DatabaseSettings(DATABASE_URL="postgresql+psycopg://u:pw@db/x"),
                        broker=BrokerSettings(REDIS_URL="redis://:pw@broker:6379/0"))
    # When the API's start line is written
    line = startup_line(settings)
    # Then it shows where everything is, without the passwords
    assert "pw" not in line and "u:***@db/x" in line and "redis://:***@broker:6379/0" in line
