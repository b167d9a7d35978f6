"""Service tokens through the API: list, look up, create (the secret shown once), revoke.

Thin over service.tokens, which owns every rule; this module only parses and shapes. No
read ever carries a secret or its hash: a token item has the hint (the prefix and four
characters) to tell tokens apart.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Response
from flask import request

from authz import Change
from authz import Rule
from authz.expectations import ExpectationsBroken
from authz.rules import TOKEN_PREFIX
from service import policy_tests
from service import tokens
from service import users as accounts
from service.api import schemas
from service.api.views import SOURCE
from service.api.views import Problem
from service.api.views import actor
from service.api.views import body
from service.api.views import bp
from service.api.views import dry_run
from service.api.views import ok
from service.api.views import page_of
from service.api.views import what_if_answer
from service.api.views import with_dry_run
from service.models import ServiceToken
from service.users import engine

#: Field names of service.tokens errors, as this API names them.
FIELDS = {"expires": "expires_days"}


def _instant(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def token_item(token: ServiceToken) -> dict[str, Any]:
    """Return the JSON shape of a token: never its secret, never its hash."""
    return {
        "name": token.name,
        "subject": token.subject,
        "roles": tokens.roles_of(token.name),
        "state": tokens.state(token),
        "hint": token.hint,
        "created_at": token.created_at.isoformat(),
        "created_by": token.created_by,
        "expires_at": _instant(token.expires_at),
        "revoked_at": _instant(token.revoked_at),
        "last_used_at": _instant(token.last_used_at),
    }


def invalid(e: tokens.TokenError) -> schemas.Invalid:
    """The 400 answer to a refused token write, naming the field as the API does."""
    field = FIELDS.get(e.field or "", e.field)
    return schemas.Invalid([schemas.FieldError(field, e.message)], e.message)


def find_token(name: str) -> ServiceToken:
    """Return the token named ``name``, or a 404 problem."""
    token = tokens.get(name)
    if token is None:
        raise Problem(404, "Not found", f"no token named {name!r}")
    return token


@bp.get("/tokens")
def token_list() -> Response:
    """List tokens by name, revoked and expired ones too, one page at a time."""
    page, per_page = schemas.paging(request.args)
    revision = engine().revision
    listing = page_of(tokens.list_tokens(), page, per_page)
    listing["items"] = [token_item(t) for t in listing["items"]]
    return ok({"revision": revision, **listing})


#: The body of a token creation.
CREATE_FIELDS = {
    "name": schemas.Field(str),
    "roles": schemas.Field(list, required=False),
    "expires_days": schemas.Field(int, required=False),
}


@bp.post("/tokens")
@with_dry_run
def token_create() -> Response:
    """Create a token with its roles; the answer is the only place its secret appears.

    ``?dry_run=1``: the what-if of its role assignments; no token, no secret.
    """
    data = body(CREATE_FIELDS)
    roles = data.get("roles", [])
    wrong = [
        schemas.FieldError(f"roles[{i}]", "must be a string")
        for i, role in enumerate(roles)
        if not isinstance(role, str)
    ]
    if wrong:
        raise schemas.Invalid(wrong)
    name = data["name"]
    try:
        if tokens.get(name) is not None:
            raise Problem(409, "Conflict", f"a token named {name!r} exists (names are not reused)")
        if dry_run():
            return creation_what_if(name, roles, data.get("expires_days"))
        token, secret = tokens.create(
            name,
            roles=roles,
            expires_days=data.get("expires_days"),
            actor=actor(),
            source=SOURCE,
        )
    except tokens.TokenError as e:
        if e.field == "name" and tokens.get(name) is not None:
            # Another request created it between the check above and the write.
            raise Problem(409, "Conflict", e.message) from e
        raise invalid(e) from e
    response = ok(
        {"revision": engine().revision, "token": token_item(token), "secret": secret}, 201
    )
    # The secret must not outlive this answer in any cache along the way.
    response.headers["Cache-Control"] = "no-store"
    return response


def creation_what_if(name: str, roles: list[str], expires_days: int | None) -> Response:
    """The dry run of a token creation: its role assignments' what-if; nothing written.

    Refuses what ``tokens.create`` refuses before it writes (TokenError: a 400), so a dry
    run that is accepted describes a creation that would be.
    """
    actor()  # a creation names its creator: a dry run needs one too
    name = tokens.check_name(name)
    for role in roles:
        try:
            accounts.check_role(role)
        except accounts.AccountError as e:
            raise tokens.TokenError(e.message, field="roles") from e
    if expires_days is not None and not 1 <= expires_days <= tokens.MAX_DAYS:
        raise tokens.TokenError(f"expires must be 1 to {tokens.MAX_DAYS} days", field="expires")
    subject = f"{TOKEN_PREFIX}{name}"
    if any(r.values[:1] == (subject,) for r in engine().rules()):
        raise tokens.TokenError(
            f"the policy already has rows for {subject}; remove them or choose another name",
            field="name",
        )
    links = (Rule.of("g", subject, role) for role in dict.fromkeys(roles))
    return what_if_answer(policy_tests.what_if(Change.adding(*links)))


def revocation_what_if(token: ServiceToken) -> Response:
    """The dry run of a revocation: its rows' removal, as ``tokens.revoke`` makes it.

    A revocation goes past the policy tests that promise the token itself access (a leaked
    token must not stay alive for a promise about it), so only a test about another
    subject, or another refusal, makes it not accepted.
    """
    actor()
    subject = token.subject
    links = tuple(r for r in engine().rules() if r.values[:1] == (subject,))
    change = Change.removing(*links)
    refused = engine().what_if(change).refused  # the refusal itself, to tell its kind
    own = isinstance(refused, ExpectationsBroken) and all(
        r.expectation.subject == subject for r in refused.results
    )
    result = policy_tests.what_if(change)
    return what_if_answer(result, accepted=result.refused is None or own)


@bp.get("/tokens/<token:name>")
def token_detail(name: str) -> Response:
    """Return one token."""
    revision = engine().revision
    return ok({"revision": revision, "token": token_item(find_token(name))})


@bp.delete("/tokens/<token:name>")
@with_dry_run
def token_revoke(name: str) -> Response:
    """Revoke a token: refused at once here, on every instance at its next poll.

    ``?dry_run=1``: the what-if of removing its rows; the token stays as it is.
    """
    token = find_token(name)
    if request.get_data(cache=True):
        body({})  # nothing to send; a field here is a client mistake worth reporting
    if token.revoked_at is not None:
        raise Problem(409, "Conflict", f"token {token.name!r} is already revoked")
    if dry_run():
        return revocation_what_if(token)
    try:
        revoked = tokens.revoke(token.name, actor=actor(), source=SOURCE)
    except tokens.TokenError as e:  # revoked by another request since the check above
        raise Problem(409, "Conflict", e.message) from e
    return ok({"revision": engine().revision, "token": token_item(revoked)})
