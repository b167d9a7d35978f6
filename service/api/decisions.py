"""The decision API: what the middleware would decide for any subject, path and method.

``/check`` and ``/check/batch`` answer other services: allowed or not, the rule that
decided, the policy revision and a decision id (written to the decision log when it is
on). ``/decisions`` and ``/decisions/batch`` are the older shapes of the same answer,
with an explanation; all four read, canonicalize and decide with the code below.
"""

from __future__ import annotations

import functools
import json
import re
import time
from typing import IO
from typing import Any

from flask import Response
from flask import g
from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from authz import EngineUnavailable
from authz import RequestTooLarge
from authz import Rule
from authz import UnsafePath
from authz import metrics
from authz.decision import Decision
from authz.decision import Reason
from authz.paths import MAX_METHOD
from authz.paths import MAX_PATH
from authz.paths import MAX_SEGMENTS
from authz.paths import canonical_action
from authz.paths import canonical_object
from authz.rules import MAX_VALUE_LENGTH
from authz.rules import TOKEN_PREFIX
from service import decisionlog
from service import users as accounts
from service.api import schemas
from service.api.views import Problem
from service.api.views import bp
from service.api.views import ok
from service.middleware import current_subject
from service.users import engine

Check = tuple[str, str, str]

#: The fields of one check (and of one /decisions request): all required, no others.
CHECK_FIELDS = {
    "subject": schemas.Field(str),
    "path": schemas.Field(str),
    "method": schemas.Field(str),
}
#: The largest body of one check: the longest values, each escaped in JSON (``\\uXXXX``).
MAX_CHECK_BODY = 6 * (MAX_PATH + MAX_VALUE_LENGTH + MAX_METHOD) + 1024
#: The largest batch body: MAX_BATCH checks of the longest ASCII values, twice over for
#: JSON escapes and spacing (about 4.8 MB). Larger bodies get 413 before they are read.
MAX_BATCH_BODY = schemas.MAX_BATCH * 2 * (MAX_PATH + MAX_VALUE_LENGTH + MAX_METHOD + 64)
#: Bytes read from a request body at a time.
_CHUNK = 64 * 1024
#: Anything in a path that canonical_object could refuse, or a percent-escape; a path
#: without any of these is canonical as it is (the cheap test, for every check).
_SCREEN = re.compile(r"[%?#]|//|/\.|\\|[\x00-\x1f\x7f\ud800-\udfff]")
#: What a path as the router sees it never holds: a query, a fragment, a percent-escape.
_NOT_DECODED = re.compile(r"[%?#]")


#: Paths whose bodies may be larger than the app's MAX_CONTENT_LENGTH, and their caps.
LARGE_BODIES = {
    "/api/v1/check/batch": MAX_BATCH_BODY,
    "/api/v1/decisions/batch": MAX_BATCH_BODY,
}


def allow_large_bodies() -> None:
    """Give the batch endpoints their own body cap before anything reads the body.

    Installed ahead of every other hook: the CSRF check reads ``request.form``, which
    fixes the stream's limit at the app's MAX_CONTENT_LENGTH if nothing raised it first.
    """
    limit = LARGE_BODIES.get(request.path)
    if limit is not None:
        request.max_content_length = limit


def read_json(limit: int) -> Any:
    """Return the request's JSON document, refusing bodies over ``limit`` bytes (413).

    The limit is this request's own (Flask 3.1 ``request.max_content_length``), so the rest
    of the app keeps its limit. The CSRF check may already have opened the body stream
    (to look for a form field) before the limit was set; the body is therefore also read
    with a cap here, so a body without a Content-Length cannot grow past it either.
    """
    request.max_content_length = limit
    length = request.content_length
    if length is not None and length > limit:
        raise RequestEntityTooLarge(f"the body is larger than {limit} bytes")
    if not request.is_json:
        raise schemas.Invalid(
            [schemas.FieldError(None, "must be a JSON object")],
            "the body must be JSON (Content-Type: application/json)",
        )
    data = _read_at_most(request.stream, limit)
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates)
    except DuplicateKey as e:
        raise schemas.Invalid(
            [schemas.FieldError(e.key, "is given twice")], "a field is given twice"
        ) from None
    except (ValueError, RecursionError):
        # RecursionError: nesting deeper than the parser goes ("[[[[..."), not a 500.
        raise schemas.Invalid(
            [schemas.FieldError(None, "is not valid JSON")], "the body is not valid JSON"
        ) from None


class DuplicateKey(ValueError):
    """A JSON object names a key twice (readers disagree on which value counts)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when a key repeats: a gateway reading the first value and
    this service the last would disagree on the subject decided."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return found


def _read_at_most(stream: IO[bytes], limit: int) -> bytes:
    """Read a body to its end, in chunks; 413 once it holds more than ``limit`` bytes.

    In chunks, because one read of ``limit`` bytes would allocate that much for any body,
    and a stream may return less than asked before its end.
    """
    body = bytearray()
    while True:
        chunk = stream.read(min(_CHUNK, limit + 1 - len(body)))
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise RequestEntityTooLarge(f"the body is larger than {limit} bytes")


class CheckReader:
    """Reads checks into the (subject, object, action) the middleware would decide.

    A batch repeats its methods: each distinct one is checked once per call.
    """

    def __init__(self) -> None:
        self._actions: dict[str, tuple[str, str | None]] = {}

    def read(self, raw: Any, prefix: str = "") -> Check:
        """Return one check's request, or raise Invalid naming each bad field."""
        return self.plain(raw) or self._full(raw, prefix)

    def read_all(self, raw: list[Any], name: str) -> list[Check]:
        """Read every check of a batch; Invalid names each bad one (none is decided)."""
        checks: list[Check] = []
        errors: list[schemas.FieldError] = []
        plain, append = self.plain, checks.append
        for i, item in enumerate(raw):
            check = plain(item)
            if check is None:
                try:
                    check = self._full(item, f"{name}[{i}].")
                except schemas.Invalid as e:
                    errors += e.errors
                    continue
            append(check)
        if errors:
            raise schemas.Invalid(errors, f"some {name} are invalid; none was decided")
        return checks

    def plain(self, raw: Any) -> Check | None:
        """The check, when it is the plain shape with values in their one spelling; else
        None (then ``_full`` says what is wrong, or reads what is unusual but fine).

        The cheap test every check of a batch gets: a thousand run per call.
        """
        if type(raw) is not dict or len(raw) != 3:
            return None
        sub, path, method = raw.get("subject"), raw.get("path"), raw.get("method")
        if (
            type(sub) is str
            and type(path) is str
            and len(sub) <= MAX_VALUE_LENGTH
            and schemas.is_known_subject(sub)
            and len(path) <= MAX_PATH
            and path[:1] == "/"
            and path.count("/") <= MAX_SEGMENTS
            and not _SCREEN.search(path)
        ):
            if type(method) is not str:
                return None
            action, problem = self._actions.get(method) or self._action(method)
            return (sub, path, action) if problem is None else None
        return None

    def _full(self, raw: Any, prefix: str) -> Check:
        """Read a check that is not plain: every bad field named, or the check."""
        data = schemas.read_object(
            raw, CHECK_FIELDS, prefix=prefix, what=prefix.rstrip(".") or "the body"
        )
        sub, path, method = data["subject"], data["path"], data["method"]
        errors: list[schemas.FieldError] = []
        problem = self._subject(sub)
        if problem is not None:
            errors.append(schemas.FieldError(f"{prefix}subject", problem))
        # The path as the middleware would take it: a path it refuses (dot segments, "//",
        # backslashes, control characters, encoded separators) is refused here too, so
        # no answer is given about a path the router could read another way.
        problem = _path_problem(path)
        if problem is not None:
            errors.append(schemas.FieldError(f"{prefix}path", problem))
        action, problem = self._action(method)
        if problem is not None:
            errors.append(schemas.FieldError(f"{prefix}method", problem))
        if errors:
            raise schemas.Invalid(errors)
        return sub, path, action

    @staticmethod
    def _subject(value: str) -> str | None:
        """Why ``value`` is not a subject in its one spelling, or None."""
        if len(value) <= MAX_VALUE_LENGTH and schemas.is_known_subject(value):
            return None  # the common case: one pattern match
        try:
            schemas.known_subject(value)
        except schemas.Invalid as e:
            return e.errors[0].message
        return None

    def _action(self, method: str) -> tuple[str, str | None]:
        """The action checked for ``method`` (HEAD as GET), or why it is refused."""
        found = self._actions.get(method)
        if found is not None:
            return found
        if len(method) > MAX_METHOD:
            found = ("", f"must be at most {MAX_METHOD} characters")
        else:
            try:
                found = (canonical_action(schemas.method(method)), None)
            except schemas.Invalid as e:
                found = ("", e.errors[0].message)
            except UnsafePath:
                found = ("", "must be an HTTP method name, e.g. GET")
        if len(self._actions) < schemas.MAX_BATCH:
            self._actions[method] = found
        return found


def _path_problem(path: str) -> str | None:
    """Why the middleware would refuse ``path``, or None when it would decide it as it is."""
    if _NOT_DECODED.search(path):
        # The middleware decides the decoded path without its query: "/a?x", "/a#x" and
        # "/%61" would be decided here as other objects than the request they spell.
        return (
            "refused path: give the path as the router sees it (decoded), without a query "
            "(?), a fragment (#) or percent-escapes (%)"
        )
    try:
        canonical_object(path)
    except RequestTooLarge as e:
        return f"refused path: {e} (the middleware answers such a request with 414)"
    except UnsafePath as e:
        return f"refused path: {e}"
    return None


def caller() -> str:
    """The subject asking: a token's ``token:NAME``, the logged-in email, or anonymous."""
    token = g.get("authz_token")
    if token is not None:
        return str(token.subject)
    return current_subject()


def decide_all(checks: list[Check]) -> tuple[int, list[Decision], list[str]]:
    """Decide checks on one snapshot; return its revision, the decisions and their ids.

    One snapshot, so every answer and the revision reported come from the same policy.
    Each decision is counted in the API's metrics and written to the decision log (when
    it is on), naming the subject that asked.
    """
    started = time.perf_counter()
    # Accounts and tokens are decided as the middleware decides their requests: a
    # deactivated account or a revoked token as anonymous, an unverified account as the
    # default role. One query per kind, for the subjects that name one.
    named = {c[0] for c in checks if "@" in c[0] or c[0].startswith(TOKEN_PREFIX)}
    if named:
        standing = accounts.decided_as(named)
        if standing:
            checks = [(standing.get(c[0], c[0]), c[1], c[2]) for c in checks]
    try:
        snapshot = engine().snapshot
        # The checks' lengths are within the engine's caps (CheckReader), so its own
        # deciding function is called directly, without a second length check.
        decide = snapshot.fast
        decisions = [decide(*c) for c in checks]
    except Exception as e:
        metrics.API.record(metrics.ERROR, time.perf_counter() - started)
        if isinstance(e, EngineUnavailable):
            raise
        # As in PolicyEngine.decide: a broken model fails closed (503).
        raise EngineUnavailable(f"the engine could not decide: {e}") from e
    each = (time.perf_counter() - started) / max(len(decisions), 1)
    record, allow, deny = metrics.API.record, metrics.ALLOW, metrics.DENY
    for decision in decisions:
        record(allow if decision.allowed else deny, each)
    log = decisionlog.current()
    new_id = log.new_id
    ids = [new_id() for _ in decisions]
    if log.enabled:
        # One record for the whole batch: one write, not a thousand.
        asked_by, revision, line, now = caller(), snapshot.revision, log.line, log.now()
        lines = [
            line(
                decision_id=decision_id,
                subject=decision.subject,
                obj=decision.obj,
                action=decision.action,
                allowed=decision.allowed,
                rule=decision.rule.as_list() if decision.rule is not None else None,
                revision=revision,
                caller=asked_by,
                time=now,
            )
            for decision, decision_id in zip(decisions, ids, strict=True)
        ]
        log.write_lines([text for text in lines if text is not None])
    return snapshot.revision, decisions, ids


#: The start of a result's JSON text for each (allowed, reason).
_HEADS = {
    (allowed, reason): json.dumps({"allowed": allowed, "reason": reason.value})[:-1] + ","
    for allowed in (True, False)
    for reason in Reason
}
_NO_RULE = '"rule":null,"rule_id":null'


@functools.lru_cache(maxsize=16384)
def _rule_json(rule: Rule) -> str:
    """A deciding rule's values and id (a SHA-256) as JSON text, made once while the rule
    keeps deciding."""
    return f'"rule":{json.dumps(rule.as_list())},"rule_id":{json.dumps(rule.id)}'


def result_json(decision: Decision, decision_id: str) -> str:
    """One check's result as JSON text: allowed, reason, rule, rule_id, decision_id.

    Text, not a dict for jsonify: a batch has a thousand of them, and the parts that
    repeat (the head, the rule) are made once. The id is hex digits and "-" only.
    """
    rule = decision.rule
    return (
        f"{_HEADS[decision.allowed, decision.reason]}"
        f'{_rule_json(rule) if rule is not None else _NO_RULE},"decision_id":"{decision_id}"}}'
    )


def json_response(text: str) -> Response:
    """A JSON answer from its text."""
    return Response(text, mimetype="application/json")


# -- /check: for other services ------------------------------------------------------------


@bp.post("/check")
def check() -> Response:
    """Decide one request: allowed or not, the rule, the revision and a decision id."""
    request_ = CheckReader().read(read_json(MAX_CHECK_BODY))
    revision, (decision,), (decision_id,) = decide_all([request_])
    return json_response(f'{result_json(decision, decision_id)[:-1]},"revision":{revision}}}')


@bp.post("/check/batch")
def check_batch() -> Response:
    """Decide 1 to MAX_BATCH requests, answered in order, all on one policy snapshot."""
    raw = schemas.read_object(read_json(MAX_BATCH_BODY), {"checks": schemas.Field(list)})
    items = raw["checks"]
    if len(items) > schemas.MAX_BATCH:
        message = f"at most {schemas.MAX_BATCH} checks per call, not {len(items)}"
        raise Problem(
            422,
            "Too many checks",
            message,
            errors=[schemas.FieldError("checks", message).as_dict()],
        )
    if not items:
        raise schemas.Invalid([schemas.FieldError("checks", "must hold at least one check")])
    revision, decisions, ids = decide_all(CheckReader().read_all(items, "checks"))
    results = ",".join(map(result_json, decisions, ids))
    return json_response(f'{{"revision":{revision},"results":[{results}]}}')


# -- /decisions: the same decisions, explained --------------------------------------------


@bp.post("/decisions")
def decide() -> Response:
    """Decide one request: allowed or not, why, and the rule that decided."""
    request_ = CheckReader().read(read_json(MAX_CHECK_BODY))
    revision, (decision,), _ids = decide_all([request_])
    return ok({**decision.as_dict(), "revision": revision})


@bp.post("/decisions/batch")
def decide_many() -> Response:
    """Decide up to MAX_BATCH requests at once, in order, against one policy snapshot."""
    raw = schemas.read_object(read_json(MAX_BATCH_BODY), {"requests": schemas.Field(list)})
    items = raw["requests"]
    if len(items) > schemas.MAX_BATCH:
        raise schemas.Invalid(
            [schemas.FieldError("requests", f"at most {schemas.MAX_BATCH} requests per call")]
        )
    revision, decisions, _ids = decide_all(CheckReader().read_all(items, "requests"))
    return ok({"revision": revision, "decisions": [d.as_dict() for d in decisions]})
