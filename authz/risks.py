"""Risky rows: valid rows that grant more than an admin probably meant. Pure, no I/O.

A risky row is accepted (it may be exactly what the admin wants), but every surface that
writes one (editor, API, CLI) shows the warnings this module finds. The analysis probes
each pattern with the very predicate the engine evaluates (``authz.index``), so a warning
says what the engine will do, not what the pattern looks like.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from authz.index import compile_predicate
from authz.model import PolicyModel
from authz.rules import ANONYMOUS
from authz.rules import Rule
from authz.rules import field_names
from authz.rules import is_token
from authz.rules import is_user
from authz.snapshot import Snapshot

#: Whether an email belongs to an account (the caller knows accounts; authz does not).
HasAccount = Callable[[str], bool]

#: What the warning about an email with no account says (the rule is still accepted).
NO_ACCOUNT = "no account has this email yet; the rule applies once that address registers"
NO_TOKEN = "no live service token has this name; the row applies to one created with it"  # noqa: S105

#: Methods a pattern is tried on; one matching all of them (and a made-up one) matches
#: every method in practice.
METHOD_PROBES = (
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "OPTIONS",
    "CONNECT",
    "TRACE",
    "PROPFIND",
    "QZX-UNKNOWN",
)
#: The methods views act on (HEAD is decided as GET).
SERVED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: Paths a pattern is tried on: the root, short and deep paths, the editor and the API.
PATH_PROBES = (
    "/",
    "/q",
    "/qzx/unknown",
    "/a/b/c/d/e",
    "/admin/",
    "/admin/rules/new",
    "/api/v1/policy/rules",
    "/login",
    "/x.y",
    "/%7E",
)
#: More paths, of every shape a request may have: a pattern matching most of these and
#: PATH_PROBES grants nearly every path, whatever few characters it leaves out.
PATH_SAMPLES = (
    *PATH_PROBES,
    "/admin",
    "/admin/users/boss@example.com",
    "/admin/users/boss@example.com/active",
    "/api/v1/users/a.b+c@example.com/deactivate",
    "/api/v1/policy/rules/0123456789abcdef",
    "/register",
    "/logout",
    "/static/app.css",
    "/healthz",
    "/metrics",
    "/Z/9/_/-/~",
    "/\u00fc/\u4e2d",
    "/a b/c",
    "/j/k",
)

# Which policy field each request field is compared with: ``fn(r.x, p.y)`` or ``r.x == p.y``.
_CALL = re.compile(r"\b([A-Za-z_]\w*)\(\s*r[._]([A-Za-z]\w*)\s*,\s*p[._]([A-Za-z]\w*)\s*\)")
_EQ = re.compile(r"\br[._]([A-Za-z]\w*)\s*==\s*p[._]([A-Za-z]\w*)")


def risks(
    rule: Rule,
    policy: Snapshot | PolicyModel,
    *,
    has_account: HasAccount | None = None,
    everyone: tuple[str, ...] = (),
) -> list[str]:
    """Return a warning for each risk of a valid row; empty when it looks deliberate.

    :param policy: the snapshot the row is written to (to tell which roles anonymous
        visitors hold) or just the model.
    :param has_account: whether an email has an account (a ``token:NAME`` a live
        token); without it, emails and tokens are not checked.
    :param everyone: roles every account holds (the default role a registration gets).
    """
    snapshot = policy if isinstance(policy, Snapshot) else None
    model = policy.model if isinstance(policy, Snapshot) else policy
    names = field_names(rule.ptype, model)
    values = dict(zip(names, rule.values, strict=False))
    warnings: list[str] = []
    if rule.ptype in model.policies:
        warnings += _not_literal(values, model)
        warnings += _broad(rule, values, model, snapshot)
        subjects = [
            v for n, v in values.items() if model.field_functions.get(n, "").startswith("g")
        ]
    else:
        subjects = list(rule.values[:1])
        warnings += _visitors_role(rule, snapshot)
        if not warnings and len(rule.values) >= 2 and rule.values[0] in everyone:
            warnings.append(
                f"every account (anyone who registers included) gets role {rule.values[1]!r} "
                "and every rule it holds"
            )
    if has_account is not None:
        for email in subjects:
            if is_user(email) and not has_account(email):
                warnings.append(f"{email}: {NO_ACCOUNT}")
            elif is_token(email) and not has_account(email):
                warnings.append(f"{email}: {NO_TOKEN}")
    return warnings


def compared_fields(model: PolicyModel) -> dict[str, tuple[str, str]]:
    """Map each request field to (function, policy field) the matcher compares it with.

    ``keyMatch2(r.obj, p.obj)`` gives ``{"obj": ("keyMatch2", "obj")}``; ``r.act == p.act``
    gives ``("eq", "act")``. Fields compared in no such simple term are left out.
    """
    compared = {r: (fn, p) for fn, r, p in _CALL.findall(model.matcher)}
    compared.update({r: ("eq", p) for r, p in _EQ.findall(model.matcher) if r not in compared})
    return compared


def _visitors_role(rule: Rule, snapshot: Snapshot | None) -> list[str]:
    if len(rule.values) < 2:
        return []
    member, role = rule.values[0], rule.values[1]
    if member == ANONYMOUS or (snapshot is not None and member in snapshot.roles_for(ANONYMOUS)):
        return [
            f"anonymous visitors (anyone, without logging in) get role {role!r} "
            "and every rule it holds"
        ]
    return []


def matches_every_method(kind: str, pattern: str) -> bool:
    """Whether a methods pattern matches every method (or the empty one, which is the same
    thing under regexMatch: Casbin's ``re.match`` only needs a match at the start).

    Probing with a fixed made-up method would let ``[^Q]`` (every method but those
    starting with Q) pass unwarned; instead, a pattern that takes every method the views
    act on and also some one-letter change of one of them (``GEA``, ``DALETE``) is one
    that does not name methods, it excludes a few.
    """
    matches = _predicate(kind, pattern)
    if matches is None:
        return False
    if matches("") or all(matches(m) for m in METHOD_PROBES):
        return True
    return all(matches(m) for m in SERVED_METHODS) and any(matches(m) for m in _method_mutants())


def _method_mutants() -> list[str]:
    """Every served method with one letter changed, except those starting with a served
    method (``PUTCH`` starts with ``PUT``: a pattern naming PUT takes it by prefix)."""
    out = []
    for method in SERVED_METHODS:
        for at in range(len(method)):
            for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
                mutant = method[:at] + letter + method[at + 1 :]
                if not any(mutant.startswith(m) for m in SERVED_METHODS):
                    out.append(mutant)
    return out


def matches_every_path(kind: str, pattern: str) -> bool:
    """Whether a path pattern matches every path (``*``, ``/*``; ``/:a`` does not)."""
    matches = _predicate(kind, pattern)
    return matches is not None and all(matches(p) for p in PATH_PROBES)


def matches_most_paths(kind: str, pattern: str) -> int:
    """How many of PATH_SAMPLES a path pattern matches when it is two thirds or more of
    them (``/[^%]*``, ``/.+``: every path but a few), else 0."""
    matches = _predicate(kind, pattern)
    if matches is None:
        return 0
    found = sum(1 for p in PATH_SAMPLES if matches(p))
    return found if 3 * found >= 2 * len(PATH_SAMPLES) else 0


def _predicate(kind: str, pattern: str) -> Callable[[str], bool] | None:
    try:
        return compile_predicate(kind, pattern)
    except Exception:  # noqa: BLE001 - a pattern the engine cannot evaluate grants nothing
        return None


#: keyMatch-style path patterns: "/:name", "/{name}" and "/*" stand for a segment or more.
_PLACEHOLDER = re.compile(r":[^/]+|\{[^/]+?\}")
#: An escaped character ("\+") stands for itself.
_ESCAPE = re.compile(r"\\(.)")


def _not_literal(values: dict[str, str], model: PolicyModel) -> list[str]:
    """Warn when a path pattern does not match its own text: keyMatch2 reads a path as a
    regular expression, so a deny row for "/admin/users/a+tag@example.com" denies
    "/admin/users/aatag@example.com", not that page."""
    request = model.request
    compared = compared_fields(model)
    if len(request) != 3 or request[1] not in compared:
        return []
    kind, field = compared[request[1]]
    if kind not in ("keyMatch2", "keyMatch3", "keyMatch4", "keyMatch5") or field not in values:
        return []
    pattern = values[field]
    text = _ESCAPE.sub(r"\1", _PLACEHOLDER.sub("x", pattern.replace("/*", "/x")))
    matches = _predicate(kind, pattern)
    if matches is None or matches(text):
        return []
    return [
        f"the path pattern {pattern!r} does not match the path {text!r}: {kind} reads it as "
        "a regular expression, where + ? $ ^ | ( ) [ ] { } are operators; write \\+ for a "
        "literal +"
    ]


def _broad(
    rule: Rule, values: dict[str, str], model: PolicyModel, snapshot: Snapshot | None
) -> list[str]:
    if values.get("eft", "allow") != "allow":
        return []  # a broad deny row takes access away; it never grants too much
    request = model.request
    compared = compared_fields(model)
    found: list[str] = []
    every_path = every_method = False
    if len(request) == 3 and request[1] in compared:
        kind, field = compared[request[1]]
        if field in values and kind != "eq" and not kind.startswith("g"):
            every_path = matches_every_path(kind, values[field])
            most = 0 if every_path else matches_most_paths(kind, values[field])
            if every_path:
                found.append(f"the path pattern {values[field]!r} matches every path")
            elif most:
                every_path = True
                found.append(
                    f"the path pattern {values[field]!r} matches nearly every path "
                    f"({most} of {len(PATH_SAMPLES)} sample paths)"
                )
    if len(request) == 3 and request[2] in compared:
        kind, field = compared[request[2]]
        if field in values and kind != "eq" and not kind.startswith("g"):
            every_method = matches_every_method(kind, values[field])
            if every_method:
                pattern = values[field]
                empty = _predicate(kind, pattern)
                why = (
                    " (it matches the empty string, and a regex needs to match only the "
                    "start of the method)"
                    if empty is not None and empty("") and pattern not in (".*", "(.*)")
                    else ""
                )
                found.append(f"the methods pattern {pattern!r} matches every method{why}")
    if not found:
        return []
    subject = next(
        (v for n, v in values.items() if model.field_functions.get(n, "").startswith("g")),
        values.get("sub", ""),
    )
    visitors = subject == ANONYMOUS or (
        snapshot is not None and subject in snapshot.roles_for(ANONYMOUS)
    )
    if visitors:
        who = (
            "anonymous visitors"
            if subject == ANONYMOUS
            else f"anonymous visitors (they inherit {subject!r})"
        )
        if every_path and every_method:
            scope = "every request"
        elif every_path:
            scope = "these methods on every path"
        else:
            scope = "every method on these paths"
        found.append(f"this allow rule gives {who} {scope}, without logging in")
    return found
