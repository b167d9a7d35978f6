"""Decisions as values: allowed or not, why, and the rule that decided."""

from __future__ import annotations

import enum
from typing import NamedTuple

from authz.rules import Rule


class Reason(enum.StrEnum):
    """Why a request was allowed or denied."""

    ALLOW_RULE = "allow-rule"
    DENY_RULE = "deny-rule"
    NO_MATCH = "no-match"


class Decision(NamedTuple):
    """The outcome of one (subject, object, action) check.

    A named tuple: one is made per request, and a tuple is the cheapest value to build.
    """

    allowed: bool
    reason: Reason
    subject: str
    obj: str
    action: str
    rule: Rule | None = None

    def explain(self) -> str:
        """Return a one-line, human explanation naming the deciding rule."""
        verdict = "allow" if self.allowed else "deny"
        request = f"{self.subject} {self.action} {self.obj}"
        if self.reason is Reason.ALLOW_RULE:
            return f"{verdict}: {request} is allowed by rule [{self.rule}]"
        if self.reason is Reason.DENY_RULE:
            return f"{verdict}: {request} is denied by rule [{self.rule}]"
        if self.allowed:
            return f"{verdict}: {request} matches no rule that denies it"
        return f"{verdict}: {request} matches no allow rule"

    def as_dict(self) -> dict[str, object]:
        """Return a JSON-ready mapping of this decision."""
        return {
            "allowed": self.allowed,
            "reason": str(self.reason),
            "subject": self.subject,
            "object": self.obj,
            "action": self.action,
            "rule": self.rule.as_list() if self.rule else None,
            "explain": self.explain(),
        }
