"""Policy rows as values, and their validation against the model. Pure: no I/O."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import unicodedata
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any
from typing import NamedTuple

from casbin.util.builtin_operators import glob_match

from authz import patterns
from authz.errors import RuleError
from authz.model import PolicyModel
from authz.patterns import PatternError

#: Role names: lower-case words, never containing "@", so a role never collides with a user.
ROLE_NAME = re.compile(r"[a-z][a-z0-9_-]*\Z")
_ATOM = r"[a-z0-9!$&'*+=_~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
#: An account's address as stored: lower-case ASCII, a dot-atom local part (the characters
#: of RFC 5322 atext that URLs leave unescaped) and a host name, so every character may sit
#: in a URL path segment as it is and one address has one spelling. No anchors: the URL
#: converter embeds it.
EMAIL_PATTERN = rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*"
USER_NAME = re.compile(EMAIL_PATTERN + r"\Z")
#: The subject of requests made without a logged-in, active user.
ANONYMOUS = "anonymous"
#: A service token's subject: ``token:`` and the token's name (a role-like word).
TOKEN_PREFIX = "token:"  # noqa: S105 - a subject prefix, not a secret
TOKEN_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}\Z")
#: The database stores each value in a VARCHAR(255).
MAX_VALUE_LENGTH = 255
EFFECTS = ("allow", "deny")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: ``fn(r.x, p.y`` in a matcher: the function applied to policy field y (as authz.model).
_FIELD_CALL = re.compile(r"\b([A-Za-z_]\w*)\(\s*r[._]([A-Za-z]\w*)\s*,\s*p[._]([A-Za-z]\w*)\s*[,)]")


class Rule(NamedTuple):
    """One policy row: its ptype ("p", "g", ...) and its values in model order.

    A named tuple rather than a dataclass: a policy holds a hundred thousand of these.
    """

    ptype: str
    values: tuple[str, ...]

    @classmethod
    def of(cls, ptype: str, *values: str) -> Rule:
        """Build a rule from positional values: ``Rule.of("p", "user", "/", "GET", "allow")``."""
        return cls(ptype, tuple(values))

    @property
    def is_role_link(self) -> bool:
        """Whether this row is a role assignment (a ``g`` row)."""
        return self.ptype.startswith("g")

    def as_list(self) -> list[str]:
        """Return ``[ptype, *values]``, the shape of a CSV line."""
        return [self.ptype, *self.values]

    def __str__(self) -> str:
        return ", ".join(self.as_list())

    @property
    def id(self) -> str:
        """A stable, URL-safe identifier derived from the row's content."""
        digest = hashlib.sha256("\x1f".join(self.as_list()).encode("utf-8")).hexdigest()
        return digest[:16]


def is_role(name: str) -> bool:
    """Whether ``name`` is a legal role name."""
    return ROLE_NAME.match(name) is not None


def is_user(name: str) -> bool:
    """Whether ``name`` is a legal user subject (a lower-case email)."""
    return USER_NAME.match(name) is not None


def is_token(name: str) -> bool:
    """Whether ``name`` is a service token's subject (``token:NAME``)."""
    return name.startswith(TOKEN_PREFIX) and TOKEN_NAME.match(name, len(TOKEN_PREFIX)) is not None


def normalize(rule: Rule, model: PolicyModel) -> Rule:
    """Fill an omitted trailing effect with ``allow`` (``p, sub, obj, act`` means allow)."""
    fields = model.policies.get(rule.ptype)
    if fields and fields[-1] == "eft" and len(rule.values) == len(fields) - 1:
        return Rule(rule.ptype, (*rule.values, "allow"))
    return rule


def shape(rule: Rule, model: PolicyModel, *, line: int | None = None) -> Rule:
    """Return the normalized rule when its type and arity fit the model (no value checks).

    Enough to name a stored row for removal, even one that no longer validates.
    """
    arity = model.arity(rule.ptype)
    if arity is None:
        known = ", ".join(sorted([*model.policies, *model.roles]))
        raise RuleError(f"unknown rule type {rule.ptype!r} (the model has {known})", line=line)
    rule = normalize(rule, model)
    if len(rule.values) != arity:
        raise RuleError(
            f"{rule.ptype!r} rows have {arity} values, this one has {len(rule.values)}",
            line=line,
        )
    return rule


def field_names(ptype: str, model: PolicyModel) -> tuple[str, ...]:
    """Return the names of a row's values: the model's for p rows, member/role for g rows."""
    if ptype in model.policies:
        return model.policies[ptype]
    arity = model.arity(ptype) or 0
    return ("member", "role", *(f"v{i}" for i in range(2, arity)))[:arity]


def validate(rule: Rule, model: PolicyModel, *, line: int | None = None) -> Rule:
    """Return the normalized rule, or raise RuleError naming the bad field."""
    rule = shape(rule, model, line=line)
    names = field_names(rule.ptype, model)
    for name, value in zip(names, rule.values, strict=True):
        _check_value(name, value, line)
    if rule.ptype in model.policies:
        _check_policy(rule, names, model, line)
    else:
        _check_role_link(rule, line)
    return rule


def validate_all(rules: Iterable[Rule], model: PolicyModel) -> list[Rule]:
    """Validate many rules, raising the first error (for in-memory callers)."""
    return [validate(r, model) for r in rules]


class Validator:
    """``validate`` for many rows against one model: the same answers, shared work.

    What validate decides about a value depends on the value and its field alone (only
    a g row's "member is not the role" looks at two), so a value that passed once in a
    field passes again: a policy of a million rows names a hundred thousand subjects, a
    few methods and two effects. Which checks a field takes is worked out once per row
    type, not per row. Any row that fails goes through ``validate`` itself, so the error
    is word for word the one the write path gives.
    """

    #: Values remembered per field (patterns are mostly distinct: no use keeping them all).
    REMEMBER = 1 << 17

    def __init__(self, model: PolicyModel) -> None:
        self.model = model
        #: ptype -> ((check, values that passed it) per field, whether a role link).
        self._plans: dict[str, tuple[tuple[tuple[Check, set[str]], ...], bool] | None] = {}

    def __call__(self, rule: Rule) -> Rule:
        """Return the normalized rule, or raise RuleError as ``validate`` does."""
        plan = self._plans.get(rule.ptype, _UNPLANNED)
        if plan is _UNPLANNED:
            plan = self._plans[rule.ptype] = self._plan(rule.ptype)
        if plan is None:
            return validate(rule, self.model)
        checks, link = plan
        normal = normalize(rule, self.model)
        values = normal.values
        if len(values) != len(checks) or (link and values[0] == values[1]):
            return validate(rule, self.model)
        try:
            for (check, seen), value in zip(checks, values, strict=True):
                if value not in seen:
                    check(value)
                    if len(seen) < self.REMEMBER:
                        seen.add(value)
        except Exception:  # noqa: BLE001 - validate raises the write path's own error
            return validate(rule, self.model)
        return normal

    def _plan(self, ptype: str) -> tuple[tuple[tuple[Check, set[str]], ...], bool] | None:
        model = self.model
        if model.arity(ptype) is None:
            return None
        names = field_names(ptype, model)
        if ptype in model.policies:
            return tuple((self._policy_check(name), set()) for name in names), False
        if len(names) < 2:
            return None

        def member(value: str) -> None:
            _check_value("member", value, None)
            _check_subject(value, "member", None)

        def role(value: str) -> None:
            _check_value("role", value, None)
            if not is_role(value):
                raise RuleError("not a role name", field="role")

        rest = [functools.partial(_check_value, name, line=None) for name in names[2:]]
        checks: list[Check] = [member, role, *rest]
        return tuple((check, set()) for check in checks), True

    def _policy_check(self, name: str) -> Callable[[str], None]:
        model = self.model
        fn = model.field_functions.get(name)
        if name == "eft":

            def effect(value: str) -> None:
                _check_value(name, value, None)
                if value not in EFFECTS:
                    raise RuleError("not an effect", field=name)

            return effect
        if fn is not None and fn in model.roles:

            def subject(value: str) -> None:
                _check_value(name, value, None)
                _check_subject(value, name, None)

            return subject
        functions: list[str | None] = [*_functions(name, model)] or [fn]

        def matched(value: str) -> None:
            _check_value(name, value, None)
            for each in functions:
                _check_matched(each, value, name, None)

        return matched


_UNPLANNED: Any = object()
#: Raises RuleError (or anything else) when a value fails its field's checks.
Check = Callable[[str], None]


def _check_value(name: str, value: str, line: int | None) -> None:
    if not value:
        raise RuleError("is empty", line=line, field=name)
    # One spelling per subject on every surface (CSV, CLI, API, editor): an email is
    # written lower-case without surrounding spaces. Folding it silently would let the
    # row name one subject while the writer read another; refusing names the fix.
    folded = value.strip().lower()
    if folded != value and "@" in folded and not folded.startswith("/") and is_user(folded):
        raise RuleError(f"write it as {folded}", line=line, field=name)
    if value != value.strip():
        raise RuleError("has leading or trailing spaces", line=line, field=name)
    # A value must survive export and re-import unchanged, and read the same to an admin
    # as to the engine: no control characters (C0, DEL, C1 such as U+0085 NEL), no line
    # or paragraph separators (U+2028, U+2029: str.splitlines ends a CSV record there),
    # no invisible format characters (zero-width spaces, bidirectional overrides that
    # make a rule display as another) and no lone surrogates (not encodable as UTF-8).
    if value.isascii():
        # The common case, one C-level scan: in ASCII only C0 controls and DEL qualify.
        bad = _CONTROL.search(value)
        chars = bad.group() if bad else ""
    else:
        chars = value
    for char in chars:
        kind = unicodedata.category(char)
        if kind in ("Cc", "Zl", "Zp"):
            raise RuleError(
                f"contains a control character or line break (U+{ord(char):04X}); "
                "policy values are single-line text",
                line=line,
                field=name,
            )
        if kind in ("Cf", "Cs"):
            raise RuleError(
                f"contains an invisible or unencodable character (U+{ord(char):04X})",
                line=line,
                field=name,
            )
    if len(value) > MAX_VALUE_LENGTH:
        raise RuleError(f"is longer than {MAX_VALUE_LENGTH} characters", line=line, field=name)


def _check_subject(value: str, field: str, line: int | None) -> None:
    if not (is_role(value) or is_user(value) or is_token(value)):
        raise RuleError(
            f"{value!r} is neither a role name ([a-z][a-z0-9_-]*), a lower-case email "
            "nor a service token (token:NAME)",
            line=line,
            field=field,
        )


def _check_policy(rule: Rule, names: tuple[str, ...], model: PolicyModel, line: int | None) -> None:
    for name, value in zip(names, rule.values, strict=True):
        fn = model.field_functions.get(name)
        if name == "eft":
            if value not in EFFECTS:
                raise RuleError(f"must be allow or deny, not {value!r}", line=line, field=name)
        elif fn is not None and fn in model.roles:
            # Only a field compared through a role link (g, g2, ...) names a subject;
            # "globMatch" starts with a "g" too.
            _check_subject(value, name, line)
        else:
            # Every function the matcher applies to this field, not only the last one:
            # "regexMatch(r.obj, p.obj) || keyMatch(r.obj, p.obj)" runs the value as a
            # regular expression too, so it must pass the regex cost check.
            functions: list[str | None] = [*_functions(name, model)] or [fn]
            for each in functions:
                _check_matched(each, value, name, line)


def _functions(name: str, model: PolicyModel) -> list[str]:
    return [fn for fn, _r, p in _FIELD_CALL.findall(model.matcher) if p == name]


def _check_matched(fn: str | None, value: str, name: str, line: int | None) -> None:
    if fn == "globMatch":
        _check_path(value, name, line)
        _check_glob(value, name, line)
        _check_pattern(fn, value, name, line)
    elif fn == "ipMatch":
        _check_ip(value, name, line)
    elif fn in ("keyMatch", "keyMatch2", "keyMatch3", "keyMatch4", "keyMatch5"):
        _check_path(value, name, line)
        _check_pattern(fn, value, name, line)
    elif fn == "regexMatch":
        _check_pattern(fn, value, name, line)


def _check_role_link(rule: Rule, line: int | None) -> None:
    member, role = rule.values[0], rule.values[1]
    _check_subject(member, "member", line)
    if not is_role(role):
        raise RuleError(
            f"{role!r} is not a role name ([a-z][a-z0-9_-]*); users cannot be inherited",
            line=line,
            field="role",
        )
    if member == role:
        raise RuleError(f"{role!r} cannot inherit from itself", line=line, field="role")


def _check_path(value: str, field: str, line: int | None) -> None:
    if not (value.startswith("/") or value == "*"):
        raise RuleError(f"path pattern {value!r} must start with '/'", line=line, field=field)


def _check_glob(value: str, field: str, line: int | None) -> None:
    # Casbin's own globMatch, once on a path: a pattern it cannot evaluate is refused here
    # rather than failing a decision later.
    try:
        glob_match("/", value)
    except Exception as e:  # noqa: BLE001 - whatever the glob library raises
        raise RuleError(
            f"glob pattern {value!r} cannot be evaluated: {e}", line=line, field=field
        ) from e


def _check_ip(value: str, field: str, line: int | None) -> None:
    # Casbin's ipMatch reads the pattern with ipaddress.ip_network(strict=False) and, when
    # that fails, compares it as text with an address object: such a row never matches.
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as e:
        raise RuleError(
            f"{value!r} is not an IP address or CIDR network: {e}", line=line, field=field
        ) from e


def _check_pattern(fn: str, value: str, field: str, line: int | None) -> None:
    # A pattern that could backtrack for seconds would let one row freeze every worker.
    try:
        patterns.check(fn, value)
    except PatternError as e:
        raise RuleError(e.args[0], line=line, field=field) from e
