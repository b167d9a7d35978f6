"""The OpenAPI 3.1 document of the JSON API, built from the routes and schemas the code declares.

Paths come from the app's URL map, so the document never lists a route that does not
exist; each route's request body from the ``schemas.Field`` tables its module reads
the body with; path parameters from the route's URL converter (its regex is the
pattern); the model's own field names shape rule items. What the code does not declare
(response bodies, query parameters, the statuses each route may answer) lives in the
``OPERATIONS`` table below. A route registered without an entry there is left out of
the document, and tests/integration/test_openapi.py fails on it: documenting a route
is part of adding it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from flask import Flask
from flask import Response
from flask import current_app
from werkzeug.routing import Rule as Route

from authz.expectations import MAX_NOTE
from authz.expectations import OUTCOMES
from authz.rules import EFFECTS
from authz.rules import MAX_VALUE_LENGTH
from service import params
from service.api import schemas
from service.api.decisions import CHECK_FIELDS
from service.api.policy import LINK_FIELDS
from service.api.policy import rule_fields
from service.api.policy import rule_names
from service.api.tests import CSV
from service.api.tests import TEST_FIELDS
from service.api.tokens import CREATE_FIELDS as TOKEN_FIELDS
from service.api.views import bp
from service.api.views import ok

API_PREFIX = bp.url_prefix or ""
JSON = "application/json"
PROBLEM = "application/problem+json"
#: Methods Flask answers for every route by itself; not operations of their own.
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
#: ``<converter(args):name>`` in a Flask route, as ``{name}`` in an OpenAPI path.
_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")

Schema = dict[str, Any]
Json = Callable[[], Schema]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def strict(properties: Mapping[str, Schema], optional: tuple[str, ...] = ()) -> Schema:
    """An object with exactly these properties, all present unless ``optional``."""
    return {
        "type": "object",
        "properties": dict(properties),
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


STRING: Schema = {"type": "string"}
STRINGS = array(STRING)
INSTANT: Schema = {"type": "string", "format": "date-time"}
MAYBE_INSTANT: Schema = {"type": ["string", "null"], "format": "date-time"}
REVISION: Schema = {"type": "integer", "minimum": 0, "description": "policy revision"}
COUNT: Schema = {"type": "integer", "minimum": 0}
MAYBE_STRING: Schema = {"type": ["string", "null"]}
#: A rule as ``[ptype, *values]``, or null where no rule decided.
MAYBE_ROW: Schema = {"type": ["array", "null"], "items": STRING}

#: JSON types of the ``schemas.Field`` kinds.
_KINDS = {str: "string", int: "integer", list: "array", dict: "object"}
#: What the JSON Schema says about a body field beyond its type, by the field's name.
_FIELD_DETAILS: dict[str, Schema] = {
    "revision": {"minimum": 0, "description": "the policy revision the change is based on"},
    "effect": {"enum": list(EFFECTS)},
    "subject": {"maxLength": MAX_VALUE_LENGTH},
    "member": {"maxLength": MAX_VALUE_LENGTH},
    "role": {"maxLength": MAX_VALUE_LENGTH},
    "path": {"maxLength": MAX_VALUE_LENGTH},
    "method": {"maxLength": MAX_VALUE_LENGTH},
    "roles": {"items": STRING},
    "expires_days": {"minimum": 1, "maximum": 3650},
    "outcome": {"enum": list(OUTCOMES)},
    "note": {"maxLength": MAX_NOTE},
}


def body_schema(fields: Mapping[str, schemas.Field], **items: Schema) -> Schema:
    """The JSON Schema of a body ``schemas.read_object`` accepts with ``fields``.

    :param items: the item schema of list fields, by field name.
    """
    properties = {}
    for name, spec in fields.items():
        prop: Schema = {"type": _KINDS[spec.kind], **_FIELD_DETAILS.get(name, {})}
        if name in items:
            prop["items"] = items[name]
        properties[name] = prop
    return strict(properties, tuple(n for n, spec in fields.items() if not spec.required))


# -- response bodies --------------------------------------------------------------------


def rule_schema() -> Schema:
    """A rule as ``policy.rule_item`` shows it: an id and the model's values by name."""
    names = rule_names()
    return strict({"id": ref("RuleId"), **{name: STRING for name in names}})


#: A decision as ``Decision.as_dict`` shows it (/decisions).
DECISION: dict[str, Schema] = {
    "allowed": {"type": "boolean"},
    "reason": STRING,
    "subject": STRING,
    "object": STRING,
    "action": STRING,
    "rule": {"type": ["array", "null"], "items": STRING},
    "explain": STRING,
}
#: A decision as /check shows it.
CHECK: dict[str, Schema] = {
    "allowed": {"type": "boolean"},
    "reason": {"enum": ["allow-rule", "deny-rule", "no-match"]},
    "rule": {"type": ["array", "null"], "items": STRING},
    "rule_id": {"type": ["string", "null"]},
    "decision_id": STRING,
}


def components() -> dict[str, Schema]:
    """The shared schemas: items of every kind the API returns, and the problem document."""
    field_error = strict({"field": {"type": ["string", "null"]}, "message": STRING})
    user = {
        "email": {"type": "string", "format": "email"},
        "active": {"type": "boolean"},
        "roles": STRINGS,
        "created_at": INSTANT,
    }
    return {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details; 409s add reason and more. A change "
            "refused by policy tests (reason policy-tests) lists each broken test in tests.",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": STRING,
                "title": STRING,
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": STRING,
                "errors": array(field_error),
                "more_errors": COUNT,
                "reason": STRING,
                "current_revision": REVISION,
                "existing": {"type": "object"},
                "tests": array(ref("TestResult")),
                "more_tests": COUNT,
            },
        },
        "FieldError": field_error,
        "RuleId": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
        "Rule": rule_schema(),
        "Assignment": strict({"id": ref("RuleId"), "member": STRING, "role": STRING}),
        "User": strict(user),
        "UserDetail": strict(
            {
                **user,
                "last_login_at": MAYBE_INSTANT,
                "effective_roles": STRINGS,
                "permissions": array(ref("Rule")),
            }
        ),
        "AuditEntry": strict(
            {
                "id": {"type": ["integer", "null"]},
                "at": INSTANT,
                "actor": STRING,
                "source": STRING,
                "action": STRING,
                "added": array(STRINGS),
                "removed": array(STRINGS),
                "forced": {"type": "boolean"},
                "revision": REVISION,
                "detail": STRING,
            }
        ),
        "Decision": strict(DECISION),
        "Test": strict(
            {
                "id": ref("RuleId"),
                "subject": STRING,
                "method": STRING,
                "path": STRING,
                "outcome": {"enum": list(OUTCOMES)},
                "note": STRING,
            }
        ),
        "TestResult": strict(
            {
                "expectation": ref("Test"),
                "passed": {"type": "boolean"},
                "allowed": {"type": ["boolean", "null"]},
                "rule": MAYBE_ROW,
                "explain": STRING,
            }
        ),
        "WhatIf": strict(
            {
                "added": array(STRINGS),
                "removed": array(STRINGS),
                "tests": array(
                    strict(
                        {
                            "expectation": ref("Test"),
                            "change": {"enum": ["breaks", "passes"]},
                            "rule": MAYBE_ROW,
                            "explain": STRING,
                            "text": STRING,
                        }
                    )
                ),
                "access": array(
                    strict(
                        {
                            "change": {"enum": ["gains", "loses"]},
                            "subject": STRING,
                            "method": STRING,
                            "path": STRING,
                            "text": STRING,
                        }
                    )
                ),
                "more": COUNT,
                "limits": STRINGS,
                "refused": MAYBE_STRING,
                "compared": {"type": "object", "additionalProperties": COUNT},
            }
        ),
        "Check": strict(CHECK),
        "Token": strict(
            {
                "name": STRING,
                "subject": {"type": "string", "pattern": "^token:"},
                "roles": STRINGS,
                "state": {"enum": ["active", "expired", "revoked"]},
                "hint": STRING,
                "created_at": INSTANT,
                "created_by": STRING,
                "expires_at": MAYBE_INSTANT,
                "revoked_at": MAYBE_INSTANT,
                "last_used_at": MAYBE_INSTANT,
            }
        ),
    }


def listing(item: str) -> Schema:
    """A page of a list: the revision it was read at, paging fields and the items."""
    return strict(
        {
            "revision": REVISION,
            "total": {"type": "integer", "minimum": 0},
            "page": {"type": "integer", "minimum": 1},
            "per_page": {"type": "integer", "minimum": 1},
            "items": array(ref(item)),
        }
    )


def at_revision(**properties: Schema) -> Json:
    """An object holding the policy revision and ``properties``."""
    return lambda: strict({"revision": REVISION, **properties})


# -- query parameters -------------------------------------------------------------------


def query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "schema": schema, "description": description}


PAGING = (
    query("page", {"type": "integer", "minimum": 1, "maximum": params.MAX_PAGE}, "from 1"),
    query(
        "per_page",
        {"type": "integer", "minimum": 1, "maximum": schemas.MAX_PER_PAGE},
        f"items per page (default {schemas.DEFAULT_PER_PAGE})",
    ),
)
REVISION_QUERY = query(
    "revision", REVISION, "the revision the change is based on (or in the body, not both)"
)
#: A yes/no query parameter; any other spelling is a 400.
FLAG: Schema = {"type": "string", "enum": ["1", "0", "true", "false"]}
DRY_RUN = query(
    "dry_run",
    FLAG,
    "1: plan the change and answer what it would do (200); nothing is written",
)


def dry_run_answer() -> Schema:
    """The answer to a dry run of a policy change: accepted or not, and its what-if."""
    return strict(
        {
            "dry_run": {"const": True},
            "accepted": {"type": "boolean"},
            "revision": REVISION,
            "what_if": ref("WhatIf"),
        }
    )


def tests_dry_run_answer() -> Schema:
    """The answer to a dry run of a policy-test write: what it adds and removes, and the
    new tests the current policy does not keep (any one refuses it)."""
    return strict(
        {
            "dry_run": {"const": True},
            "accepted": {"type": "boolean"},
            "revision": REVISION,
            "added": array(ref("Test")),
            "removed": array(ref("Test")),
            "tests": array(ref("TestResult")),
            "refused": MAYBE_STRING,
        }
    )


# -- the operations ---------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """What the code does not declare about a route: its answers, its query, its purpose."""

    summary: str
    tag: str
    response: Json
    status: int = 200
    body: Json | None = None
    body_required: bool = True
    #: A request body that shows the shape (and that the fuzz tests send as it is).
    example: Any = None
    query: tuple[Schema, ...] = ()
    #: Error statuses beyond those every operation may answer (see ``ALWAYS``).
    errors: tuple[int, ...] = ()
    anonymous: bool = False
    location: bool = False
    #: The answer to ``?dry_run=1`` (200, nothing written), for a write that takes one.
    dry_run: Json | None = None
    #: The media type of the request body and of the success answer.
    body_media: str = JSON
    media: str = JSON


#: Errors any operation may answer: a refused path or bad input, no or a bad credential,
#: a policy deny, a URI too long to decide on, and an engine that cannot decide.
ALWAYS = (400, 401, 403, 414, 503)
#: Statuses of problem documents, with their descriptions.
ERRORS = {
    400: "Invalid input (``errors`` names each bad field), a refused path or a missing CSRF token",
    401: "Not logged in, or the bearer token is invalid, expired or revoked",
    403: "The policy does not allow this subject this request",
    404: "No such resource (or a path parameter in another spelling than its canonical one)",
    409: "Conflict: a stale revision, a duplicate row, the lockout guard, a revoked token, "
    "or policy tests the change breaks (reason policy-tests; tests lists each with the rule "
    "that now decides it)",
    413: "The request body is too large",
    415: "The request body is not of the media type the operation reads",
    414: "The request URI is too long to decide on",
    422: "Too many items in one call",
    503: "The policy engine cannot decide; retry after Retry-After seconds",
}
WRITE_ERRORS = (404, 409)
EMPTY: Schema = {"type": "object", "maxProperties": 0, "description": "nothing, or {}"}


def _rule_body() -> Schema:
    return body_schema(rule_fields(rule_names()))


def _revision_body() -> Schema:
    return body_schema({"revision": schemas.Field(int)})


def _decision_request() -> Schema:
    return body_schema(CHECK_FIELDS)


ASK = {"subject": "user", "path": "/", "method": "GET"}
ASK_ADMIN = {"subject": "anonymous", "path": "/admin/", "method": "GET"}
NEW_RULE = {"subject": "user", "path": "/reports/*", "methods": "GET", "revision": 3}

#: (OpenAPI path under the prefix, method) -> what the route does and answers.
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("/openapi.json", "GET"): Operation(
        "This document", "meta", lambda: {"type": "object"}, anonymous=True
    ),
    ("/csrf", "GET"): Operation(
        "The CSRF token session callers send in X-CSRFToken on writes",
        "meta",
        lambda: strict({"csrf_token": STRING}),
    ),
    # policy rows
    ("/policy/rules", "GET"): Operation(
        "List rules",
        "policy",
        lambda: listing("Rule"),
        query=(
            *PAGING,
            query("subject", STRING, "only rules of this subject"),
            query("effect", {"enum": list(EFFECTS)}, "only rules with this effect"),
            query("q", STRING, "only rules with a value containing this (any case)"),
        ),
    ),
    ("/policy/rules", "POST"): Operation(
        "Add a rule",
        "policy",
        at_revision(rule=ref("Rule"), warnings=STRINGS),
        status=201,
        body=_rule_body,
        errors=WRITE_ERRORS,
        location=True,
        example=NEW_RULE,
        dry_run=dry_run_answer,
    ),
    ("/policy/rules/{rule_id}", "GET"): Operation(
        "One rule", "policy", at_revision(rule=ref("Rule")), errors=(404,)
    ),
    ("/policy/rules/{rule_id}", "PUT"): Operation(
        "Replace a rule (the new row has a new id)",
        "policy",
        at_revision(rule=ref("Rule"), warnings=STRINGS),
        body=_rule_body,
        errors=WRITE_ERRORS,
        example=NEW_RULE,
        dry_run=dry_run_answer,
    ),
    ("/policy/rules/{rule_id}", "DELETE"): Operation(
        "Remove a rule",
        "policy",
        at_revision(removed=ref("Rule")),
        body=_revision_body,
        body_required=False,
        query=(REVISION_QUERY,),
        errors=WRITE_ERRORS,
        example={"revision": 3},
        dry_run=dry_run_answer,
    ),
    ("/policy/roles", "GET"): Operation(
        "List role assignments",
        "policy",
        lambda: listing("Assignment"),
        query=(
            *PAGING,
            query("member", STRING, "only assignments of this member"),
            query("role", STRING, "only assignments to this role"),
        ),
    ),
    ("/policy/roles", "POST"): Operation(
        "Give an account or a role a role",
        "policy",
        at_revision(assignment=ref("Assignment"), warnings=STRINGS),
        status=201,
        body=lambda: body_schema(LINK_FIELDS),
        errors=WRITE_ERRORS,
        location=True,
        example={"member": "boss@example.com", "role": "admin", "revision": 3},
        dry_run=dry_run_answer,
    ),
    ("/policy/roles/{rule_id}", "GET"): Operation(
        "One role assignment", "policy", at_revision(assignment=ref("Assignment")), errors=(404,)
    ),
    ("/policy/roles/{rule_id}", "DELETE"): Operation(
        "Take a role away",
        "policy",
        at_revision(removed=ref("Assignment")),
        body=_revision_body,
        body_required=False,
        query=(REVISION_QUERY,),
        errors=WRITE_ERRORS,
        example={"revision": 3},
        dry_run=dry_run_answer,
    ),
    # policy tests
    ("/policy/tests", "GET"): Operation(
        "List policy tests, each with its result on the current policy",
        "policy tests",
        lambda: strict(
            {
                "revision": REVISION,
                "total": COUNT,
                "page": {"type": "integer", "minimum": 1},
                "per_page": {"type": "integer", "minimum": 1},
                "failing": {**COUNT, "description": "failing tests in all (unfiltered)"},
                "bad": {**STRINGS, "description": "stored tests that do not read"},
                "items": array(ref("TestResult")),
            }
        ),
        query=(
            *PAGING,
            query(
                "q",
                {"type": "string", "maxLength": 255},
                "only tests with a value containing this (any case)",
            ),
            query("failing", FLAG, "1: only tests the current policy does not keep"),
        ),
    ),
    ("/policy/tests", "POST"): Operation(
        "Add a policy test; refused (409, reason policy-tests) when the policy does not keep it",
        "policy tests",
        at_revision(test=ref("TestResult"), replaced={"oneOf": [ref("Test"), {"type": "null"}]}),
        status=201,
        body=lambda: body_schema(TEST_FIELDS),
        errors=(409,),
        location=True,
        example={"subject": "anonymous", "method": "GET", "path": "/admin/", "outcome": "deny"},
        dry_run=tests_dry_run_answer,
    ),
    ("/policy/tests/{test_id}", "GET"): Operation(
        "One policy test with its result", "policy tests", at_revision(test=ref("TestResult"))
    ),
    ("/policy/tests/{test_id}", "DELETE"): Operation(
        "Remove a policy test",
        "policy tests",
        at_revision(removed=ref("Test")),
        body=lambda: EMPTY,
        body_required=False,
        dry_run=tests_dry_run_answer,
    ),
    ("/policy/tests/export", "GET"): Operation(
        "The policy tests as a CSV file (subject, method, path, outcome, note)",
        "policy tests",
        lambda: STRING,
        media=CSV,
    ),
    ("/policy/tests/load", "POST"): Operation(
        "Store a CSV file's policy tests in one write; refused (409) when the policy does "
        "not keep one",
        "policy tests",
        at_revision(added=array(ref("Test")), removed=array(ref("Test"))),
        body=lambda: STRING,
        body_media=CSV,
        query=(
            query("replace", FLAG, "1: remove the stored tests the file does not hold"),
            query("allow_empty", FLAG, "1: let an empty file replace every test"),
        ),
        errors=(409, 413, 415),
        example="anonymous, GET, /admin/, deny, the editor is for admins\n",
        dry_run=tests_dry_run_answer,
    ),
    ("/policy/roles/{role}/members", "GET"): Operation(
        "The direct members of a role",
        "policy",
        at_revision(role=STRING, members=STRINGS),
        errors=(404,),
    ),
    # accounts
    ("/users", "GET"): Operation(
        "List accounts",
        "users",
        lambda: listing("User"),
        query=(*PAGING, query("q", STRING, "only emails containing this")),
    ),
    ("/users/{email}", "GET"): Operation(
        "One account, its effective roles and permissions",
        "users",
        at_revision(user=ref("UserDetail")),
        errors=(404,),
    ),
    ("/users/{email}/activate", "POST"): Operation(
        "Activate an account",
        "users",
        at_revision(user=ref("User")),
        body=lambda: EMPTY,
        body_required=False,
        errors=(404,),
    ),
    ("/users/{email}/deactivate", "POST"): Operation(
        "Deactivate an account: it is anonymous at once and its sessions end",
        "users",
        at_revision(user=ref("User")),
        body=lambda: EMPTY,
        body_required=False,
        errors=WRITE_ERRORS,
    ),
    ("/users/{email}/sessions", "DELETE"): Operation(
        "End every session of an account",
        "users",
        lambda: strict({"email": STRING, "ended": {"type": "integer", "minimum": 0}}),
        body=lambda: EMPTY,
        body_required=False,
        errors=(404,),
    ),
    # audit
    ("/audit", "GET"): Operation(
        "List audit entries, newest first",
        "audit",
        lambda: strict(
            {
                "revision": REVISION,
                "page": {"type": "integer", "minimum": 1},
                "per_page": {"type": "integer", "minimum": 1},
                "has_more": {"type": "boolean"},
                "items": array(ref("AuditEntry")),
            }
        ),
        query=(
            *PAGING,
            query("actor", STRING, "only changes by this actor"),
            query("since", STRING, "ISO-8601 date or date-time, inclusive (naive: UTC)"),
            query("until", STRING, "ISO-8601 date or date-time, exclusive (naive: UTC)"),
        ),
    ),
    # decisions
    ("/decisions", "POST"): Operation(
        "Decide one request, with the explanation",
        "decisions",
        at_revision(**DECISION),
        body=_decision_request,
        example=ASK,
    ),
    ("/decisions/batch", "POST"): Operation(
        "Decide many requests on one policy snapshot",
        "decisions",
        at_revision(decisions=array(ref("Decision"))),
        body=lambda: body_schema(
            {"requests": schemas.Field(list)},
            requests={**_decision_request(), "maxItems": schemas.MAX_BATCH},
            example={"requests": [ASK, ASK_ADMIN]},
        ),
    ),
    ("/check", "POST"): Operation(
        "Decide one request: allowed, why, the rule and its id",
        "decisions",
        at_revision(**CHECK),
        body=_decision_request,
        errors=(413,),
        example=ASK,
    ),
    ("/check/batch", "POST"): Operation(
        "Decide up to 1000 requests on one policy snapshot",
        "decisions",
        at_revision(results=array(ref("Check"))),
        body=lambda: body_schema(
            {"checks": schemas.Field(list)},
            checks=_decision_request(),
            example={"checks": [ASK, ASK_ADMIN]},
        ),
        errors=(413, 422),
    ),
    ("/subjects/{subject}/roles", "GET"): Operation(
        "The roles of a subject, direct and inherited",
        "decisions",
        at_revision(subject=STRING, direct=STRINGS, roles=STRINGS),
    ),
    ("/subjects/{subject}/permissions", "GET"): Operation(
        "The rules that apply to a subject, through its roles too",
        "decisions",
        at_revision(subject=STRING, items=array(ref("Rule"))),
    ),
    # service tokens
    ("/tokens", "GET"): Operation(
        "List service tokens", "tokens", lambda: listing("Token"), query=PAGING
    ),
    ("/tokens", "POST"): Operation(
        "Create a service token; the secret is shown only in this answer",
        "tokens",
        at_revision(token=ref("Token"), secret=STRING),
        status=201,
        body=lambda: body_schema(TOKEN_FIELDS),
        errors=(409,),
        example={"name": "ci", "roles": ["admin"], "expires_days": 90},
        dry_run=dry_run_answer,
    ),
    ("/tokens/{name}", "GET"): Operation(
        "One service token", "tokens", at_revision(token=ref("Token")), errors=(404,)
    ),
    ("/tokens/{name}", "DELETE"): Operation(
        "Revoke a service token",
        "tokens",
        at_revision(token=ref("Token")),
        errors=(404, 409),
        dry_run=dry_run_answer,
    ),
}


# -- the document -----------------------------------------------------------------------


def openapi_path(route: Route) -> str:
    """The OpenAPI spelling of a route's path: ``/users/<email:email>`` -> ``/users/{email}``."""
    return _ARGUMENT.sub(r"{\1}", route.rule)


def api_routes(app: Flask) -> dict[tuple[str, str], Route]:
    """Every (OpenAPI path, method) the app serves under the API prefix."""
    found = {}
    for route in app.url_map.iter_rules():
        if route.rule.startswith(f"{API_PREFIX}/"):
            for method in sorted((route.methods or set()) - IMPLICIT_METHODS):
                found[(openapi_path(route), method)] = route
    return found


def path_parameter(route: Route, name: str) -> Schema:
    """A path parameter: the route's converter regex, anchored, is its pattern."""
    converter = route._converters[name]  # Werkzeug keeps no public name -> converter map
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": f"^(?:{converter.regex})$"},
    }


def problem_response(status: int) -> Schema:
    response: Schema = {
        "description": ERRORS[status],
        "content": {PROBLEM: {"schema": ref("Problem")}},
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": STRING}}
    if status == 503:
        response["headers"] = {"Retry-After": {"schema": STRING}}
    return response


def operation(path: str, method: str, route: Route, spec: Operation) -> Schema:
    """The OpenAPI operation object of one route and method."""
    success: Schema = {
        "description": spec.summary,
        "content": {spec.media: {"schema": spec.response()}},
    }
    if spec.location:
        success["headers"] = {"Location": {"schema": STRING, "required": True}}
    answers = {str(spec.status): success}
    if spec.dry_run is not None:
        if spec.status == 200:  # the write and its dry run answer 200 alike
            success["content"][spec.media]["schema"] = {"oneOf": [spec.response(), spec.dry_run()]}
        else:
            answers["200"] = {
                "description": "The dry run (dry_run=1): what the write would do; nothing "
                "was written",
                "content": {JSON: {"schema": spec.dry_run()}},
            }
    statuses = sorted({*ALWAYS, *spec.errors, *((404,) if route.arguments else ())})
    document: Schema = {
        "operationId": re.sub(r"\W+", "_", f"{method} {path.removeprefix(API_PREFIX)}")
        .strip("_")
        .lower(),
        "summary": spec.summary,
        "tags": [spec.tag],
        "responses": {
            **answers,
            **{str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses},
        },
    }
    names = [m.group(1) for m in _ARGUMENT.finditer(route.rule)]
    parameters = [path_parameter(route, name) for name in names] + list(spec.query)
    if spec.dry_run is not None:
        parameters.append(DRY_RUN)
    if parameters:
        document["parameters"] = parameters
    if spec.body is not None:
        media: Schema = {"schema": spec.body()}
        if spec.example is not None:
            media["example"] = spec.example
        document["requestBody"] = {
            "required": spec.body_required,
            "content": {spec.body_media: media},
        }
    if spec.anonymous:
        document["security"] = [{}]
    elif method != "GET":
        # Session writes carry the CSRF token; bearer writes carry none.
        document["security"] = [{"bearer": []}, {"session": [], "csrf": []}]
    return document


def document(app: Flask) -> Schema:
    """Build the document for ``app``'s routes (inside an app context)."""
    paths: dict[str, Schema] = {}
    for (path, method), route in sorted(api_routes(app).items()):
        spec = OPERATIONS.get((path.removeprefix(API_PREFIX), method))
        if spec is None:
            continue  # undocumented: the test names it
        paths.setdefault(path, {})[method.lower()] = operation(path, method, route, spec)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "authz JSON API",
            "version": metadata.version("authz-service"),
            "description": "Every request is decided by the policy; errors are "
            "application/problem+json (RFC 9457).",
        },
        "paths": paths,
        "components": {
            "schemas": components(),
            "responses": {f"E{s}": problem_response(s) for s in ERRORS},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A service token (authz tokens create); no cookie, no CSRF.",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": app.config["SESSION_COOKIE_NAME"],
                    "description": "The session cookie of a login through POST /login.",
                },
                "csrf": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-CSRFToken",
                    "description": "GET /api/v1/csrf; required on session writes.",
                },
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    """Return the OpenAPI 3.1 document of this API."""
    return ok(document(current_app))
