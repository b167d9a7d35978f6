"""The exceptions of the policy engine: one hierarchy, no logic."""

from __future__ import annotations


class AuthzError(Exception):
    """Base class of every error the policy engine raises on purpose."""


class ModelError(AuthzError):
    """The Casbin model file is missing, unreadable or of the wrong shape."""


class RuleError(AuthzError):
    """A policy row is invalid; ``line`` and ``field`` say where, when known."""

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None) -> None:
        self.message = message
        self.line = line
        self.field = field
        where = f"line {line}: " if line is not None else ""
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{message}")


class PolicyFileError(AuthzError):
    """A policy file has one or more bad lines; ``errors`` lists every one."""

    def __init__(
        self,
        errors: list[RuleError],
        path: str | None = None,
        *,
        message: str | None = None,
        more: int = 0,
        unchecked: int = 0,
    ) -> None:
        self.errors = errors
        self.path = path
        #: Bad lines found beyond those listed in ``errors``.
        self.more = more
        #: Lines not checked at all (reading stopped: the file is not a policy).
        self.unchecked = unchecked
        head = f"{path}: " if path else ""
        if message is not None:
            super().__init__(f"{head}{message}")
            return
        lines = "\n".join(f"  {e}" for e in errors)
        total = len(errors) + more
        text = f"{head}{total} bad line(s), nothing was changed\n{lines}"
        if more:
            text += f"\n  ... and {more} more bad line(s)"
        if unchecked:
            text += f"\n  ... and {unchecked} more line(s) not checked: this is not a policy file"
        super().__init__(text)


class EngineUnavailable(AuthzError):
    """The engine cannot decide (policy not loaded, database unreachable)."""


def database_reason(error: BaseException) -> str:
    """Return one line naming a database error: its class and the driver's first line."""
    orig = getattr(error, "orig", None) or error
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{error.__class__.__name__}: {first}" if first else error.__class__.__name__


class UnsafePath(AuthzError):
    """A request path that the router and the policy could read differently."""


class RequestTooLarge(UnsafePath):
    """A request value (path, method) longer than the engine decides on."""


class LockoutRefused(AuthzError):
    """A change would leave no active user able to open the policy editor."""


class StaleRevision(AuthzError):
    """A change was based on a policy revision that is no longer current."""

    def __init__(self, expected: int, current: int) -> None:
        self.expected = expected
        self.current = current
        super().__init__(
            f"the policy changed since revision {expected} (now {current}); reload and retry"
        )


class NotFound(AuthzError):
    """A row asked to be removed does not exist."""
