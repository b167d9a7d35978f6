"""The OpenAPI document: valid 3.1, exactly the registered routes, and true of the live API.

The fuzz tests run schemathesis against the app itself (WSGI, no server), as an admin's
session and as an admin service token, and check every answer against the document:
no 5xx, a documented status, the documented content type and a body of its schema.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import hypothesis
import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck
from hypothesis import given
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance
from schemathesis.specs.openapi.checks import response_headers_conformance
from schemathesis.specs.openapi.checks import response_schema_conformance
from schemathesis.specs.openapi.checks import status_code_conformance

from authz import Change
from authz import Rule
from service import tokens
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import AuthActions

DOC = "/api/v1/openapi.json"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Examples per operation and generation mode: enough to reach each answer a few times,
#: few enough for the whole run to stay well under a minute per backend.
MAX_EXAMPLES = 6


def routes(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every route under /api/v1, read from the URL map itself."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:[^<>:]+:)?([^<>:]+)>", r"{\1}", rule.rule)
            found |= {(path, m) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    return found


def fetch(client: FlaskClient, **headers: str) -> dict[str, Any]:
    response = client.get(DOC, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def test_the_document_is_valid_openapi_3_1(client: FlaskClient) -> None:
    document = fetch(client)
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises on any violation of the 3.1 schema


def test_the_document_lists_exactly_the_registered_routes(app: Flask, client: FlaskClient):
    """A route added without an entry in service/api/openapi.py fails here, by name."""
    document = fetch(client)
    listed = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    registered = routes(app)
    assert registered - listed == set(), "routes without an OpenAPI entry"
    assert listed - registered == set(), "documented routes that do not exist"
    assert len(registered) >= 20


def test_a_route_without_an_entry_is_missing_from_the_document(app: Flask) -> None:
    """The drift check can fail: a new route is not documented by accident."""
    app.add_url_rule("/api/v1/undocumented/<role:role>", "undocumented", lambda role: "")
    document = fetch(app.test_client())
    assert "/api/v1/undocumented/{role}" not in document["paths"]
    assert ("/api/v1/undocumented/{role}", "GET") in routes(app)


#: Routes other branches add (the routes.md of this change), as they will be registered.
COMING = [
    ("/api/v1/check", "POST"),
    ("/api/v1/check/batch", "POST"),
    ("/api/v1/subjects/<subject>/roles", "GET"),
    ("/api/v1/subjects/<subject>/permissions", "GET"),
    ("/api/v1/tokens", "GET"),
    ("/api/v1/tokens", "POST"),
    ("/api/v1/tokens/<name>", "GET"),
    ("/api/v1/tokens/<name>", "DELETE"),
]


def test_routes_being_added_elsewhere_are_documented_once_registered(app: Flask) -> None:
    """Their entries wait in the table and appear, valid, as soon as the routes exist."""
    existing = {(r.rule, m) for r in app.url_map.iter_rules() for m in r.methods or ()}
    for i, (rule, method) in enumerate(COMING):
        if (rule, method) not in existing:  # once merged, the real routes stand in
            app.add_url_rule(rule, f"coming{i}", lambda **_: "", methods=[method])
    document = fetch(app.test_client())
    validate(document)
    listed = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    assert routes(app) == listed
    token = document["paths"]["/api/v1/tokens"]["post"]["responses"]["201"]
    assert token["content"]["application/json"]["schema"]["required"] == [
        "revision",
        "token",
        "secret",
    ]


def test_anyone_may_read_it_by_policy_and_a_deny_row_takes_it_away(app: Flask) -> None:
    client = app.test_client()
    assert fetch(client)["info"]["title"]
    # It is an ordinary row: the policy, not code, decides who reads the document.
    row = Rule.of("p", "anonymous", "/api/v1/openapi.json", "GET", "allow")
    with app.app_context():
        app.extensions["authz"].apply(Change.removing(row), actor="test", source="cli")
    refused = client.get(DOC)
    assert refused.status_code == 401
    assert refused.mimetype == "application/problem+json"


def test_path_parameters_carry_the_converters_patterns(app: Flask, client: FlaskClient) -> None:
    """The document refuses what the router refuses: another spelling of an email, say."""
    document = fetch(client)
    (param,) = document["paths"]["/api/v1/users/{email}"]["get"]["parameters"]
    pattern = re.compile(param["schema"]["pattern"])
    with app.app_context():
        _token, secret = tokens.create("reader", roles=["admin"], actor="test", source="test")
    admin = {"Authorization": f"Bearer {secret}"}
    assert pattern.search(ADMIN)
    assert client.get(f"/api/v1/users/{ADMIN}", headers=admin).status_code == 200
    for other in (ADMIN.upper(), f" {ADMIN}", f"{ADMIN}/x", "admin"):
        assert not pattern.search(other), other
        assert client.get(f"/api/v1/users/{other}", headers=admin).status_code in (400, 404)


def test_request_bodies_come_from_the_modules_field_tables(client: FlaskClient) -> None:
    document = fetch(client)
    add = document["paths"]["/api/v1/policy/rules"]["post"]["requestBody"]
    schema = add["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"subject", "path", "methods", "effect", "revision"}
    assert set(schema["required"]) == {"subject", "path", "methods"}  # revision is optional
    assert schema["additionalProperties"] is False  # unknown fields are refused (schemas.py)


def test_every_error_is_a_problem_document(client: FlaskClient) -> None:
    document = fetch(client)
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert response["$ref"].startswith("#/components/responses/"), (path, method)
    for response in document["components"]["responses"].values():
        assert list(response["content"]) == ["application/problem+json"]


def test_writes_name_csrf_for_sessions_and_nothing_for_bearer(client: FlaskClient) -> None:
    document = fetch(client)
    assert document["paths"]["/api/v1/policy/rules"]["post"]["security"] == [
        {"bearer": []},
        {"session": [], "csrf": []},
    ]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


# -- fuzzing ----------------------------------------------------------------------------


def fuzz(app: Flask, credentials: dict[str, dict[str, str]]) -> Counter[int]:
    """Run every documented operation a few times, positive and negative data alike.

    ``credentials`` are the headers and cookies every call carries. Schemathesis is told
    not to make up credentials of its own (a random bearer token or session cookie would
    turn most calls into 401s). Every failure of every operation is collected, so one
    run names them all.
    """
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
    schema = schemathesis.openapi.from_wsgi(DOC, app, config=config)
    client = app.test_client()
    failures: list[str] = []
    unsatisfiable: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    # None excluded; schemathesis itself leaves out the document it was loaded from
    # (the tests above fetch and validate that one).
    labels = {tuple(reversed(op.label.split(" ", 1))) for op in operations}
    assert labels == routes(app) - {(DOC, "GET")}
    for operation in operations:
        # The document's own examples once each, then generated data, valid and invalid.
        examples = schema.get_strategies_from_examples(operation)
        strategies = [(strategy, "example", 1) for strategy in examples] + [
            (operation.as_strategy(generation_mode=mode), mode.value, MAX_EXAMPLES)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ]
        for strategy, kind, count in strategies:

            @hypothesis.settings(
                max_examples=count,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @given(case=strategy)
            def run(case: schemathesis.Case) -> None:
                response = case.call_and_validate(session=client, checks=CHECKS, **credentials)
                statuses[response.status_code] += 1

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                # Negative data for an operation without any input (GET /csrf, the policy
                # tests' export), or whose only input is a path segment of any text (a
                # subject: its spelling is checked by the view,
                # tests/integration/test_check_api.py): there is nothing the router would
                # still route that the schema calls invalid.
                assert kind == GenerationMode.NEGATIVE.value
                unsatisfiable.append(operation.label)
            except Exception as e:  # noqa: BLE001 - every failure is reported below
                failures.append(f"{operation.label} [{kind}]: {e}")
    assert not failures, "\n\n".join(failures)
    assert sorted(unsatisfiable) == [
        "GET /api/v1/csrf",
        "GET /api/v1/policy/tests/export",
        "GET /api/v1/subjects/{subject}/permissions",
        "GET /api/v1/subjects/{subject}/roles",
    ]
    # The run got past the door: successes, refusals of bad input, conflicts.
    assert {200, 400, 404, 409} <= set(statuses), statuses
    return statuses


def test_fuzz_as_an_admin_session(app: Flask, client: FlaskClient) -> None:
    AuthActions(client).login(ADMIN, ADMIN_PASSWORD)
    token = client.get("/api/v1/csrf").get_json()["csrf_token"]
    name = app.config["SESSION_COOKIE_NAME"]
    cookie = client.get_cookie(name)  # after /csrf: the session now holds the CSRF secret
    assert cookie is not None
    statuses = fuzz(app, {"headers": {"X-CSRFToken": token}, "cookies": {name: cookie.value}})
    assert statuses[201]  # the example rule, written at the revision the example names


def test_fuzz_as_an_admin_service_token(app: Flask) -> None:
    with app.app_context():
        _token, secret = tokens.create("fuzz", roles=["admin"], actor="test", source="test")
    fuzz(app, {"headers": {"Authorization": f"Bearer {secret}"}})


@pytest.mark.parametrize("path", ["/api/v1/openapi.json", "/api/v1/openapi.json?x=1"])
def test_the_document_is_json_not_a_page(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200 and response.is_json
