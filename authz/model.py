"""Load and check the Casbin model: request shape, policy types, arity, field matchers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import casbin
from casbin.model import Model

from authz.errors import ModelError

#: Matcher calls of the form ``fn(r.x, p.y)`` (or ``g(r.x, p.y, r.dom)``): which function
#: compares which policy field.
_CALL = re.compile(r"\b([A-Za-z_]\w*)\(\s*r[._]([A-Za-z]\w*)\s*,\s*p[._]([A-Za-z]\w*)\s*[,)]")


#: The adapter's table has six value columns (v0..v5).
MAX_FIELDS = 6


@dataclass(frozen=True)
class PolicyModel:
    """A parsed Casbin model of request shape (sub, obj, act)."""

    text: str
    request: tuple[str, ...]
    #: ptype ("p", "p2", ...) -> field names ("sub", "obj", "act", "eft").
    policies: dict[str, tuple[str, ...]]
    #: ptype ("g", "g2", ...) -> number of fields.
    roles: dict[str, int]
    matcher: str
    effect: str
    #: policy field name -> matching function name used for it in the matcher.
    field_functions: dict[str, str]

    @classmethod
    def from_file(cls, path: str | Path) -> PolicyModel:
        """Read a model file; raise ModelError with the reason when it is unusable."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ModelError(f"cannot read model file {path}: {e.strerror}") from e
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_text(cls, text: str, *, source: str = "<model>") -> PolicyModel:
        """Parse model text; raise ModelError when it is not a (sub, obj, act) model."""
        try:
            model = casbin.Enforcer.new_model(text=text)
        except Exception as e:  # casbin raises bare exceptions for syntax errors
            raise ModelError(f"{source}: not a valid Casbin model: {e}") from e
        sections = model.model
        for sec in ("r", "p", "e", "m"):
            if sec not in sections:
                raise ModelError(f"{source}: missing section for {sec!r}")
        request = tuple(sections["r"]["r"].tokens) if "r" in sections["r"] else ()
        names = tuple(t.removeprefix("r_") for t in request)
        if len(names) != 3:
            raise ModelError(
                f"{source}: the request must have three fields (sub, obj, act), found {len(names)}"
            )
        policies = {
            key: tuple(t.removeprefix(key + "_") for t in ast.tokens)
            for key, ast in sections["p"].items()
        }
        if "p" not in policies:
            raise ModelError(f"{source}: no policy type 'p'")
        roles: dict[str, int] = {}
        for key, ast in sections.get("g", {}).items():
            roles[key] = ast.value.count("_")
        widths = [*(len(v) for v in policies.values()), *roles.values()]
        if max(widths) > MAX_FIELDS:
            raise ModelError(f"{source}: a row may have at most {MAX_FIELDS} values (v0..v5)")
        matcher = sections["m"]["m"].value
        field_functions = {pfield: fn for fn, _rfield, pfield in _CALL.findall(matcher)}
        return cls(
            text=text,
            request=names,
            policies=policies,
            roles=roles,
            matcher=matcher,
            effect=sections["e"]["e"].value,
            field_functions=field_functions,
        )

    def arity(self, ptype: str) -> int | None:
        """Return how many values a row of this ptype has, or None for an unknown ptype."""
        if ptype in self.policies:
            return len(self.policies[ptype])
        return self.roles.get(ptype)

    def casbin_model(self) -> Model:
        """Return a fresh Casbin Model object of this text."""
        return casbin.Enforcer.new_model(text=self.text)
