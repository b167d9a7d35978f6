"""Policy tests as data: promises about single requests that every policy change must keep.

An expectation names a request (subject, method, path) and the outcome the policy owners
promise for it (``allow`` or ``deny``), with an optional note. The engine checks every
stored expectation on the snapshot a write would produce, inside the write's transaction,
and refuses a change that breaks one (:class:`ExpectationsBroken`): the answer names each
broken promise and the rule that now decides it.

An expectation is about the policy alone: it is decided for the subject as written, not
for the account behind it (a deactivated account's requests are decided as ``anonymous``
by the middleware, but deactivating an account changes no policy row).

The CSV form is one expectation a line, ``subject, method, path, outcome[, note]``, with
``#`` comment lines, as a policy file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import unicodedata
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from typing import TextIO

from authz.decision import Decision
from authz.errors import AuthzError
from authz.errors import PolicyFileError
from authz.errors import RuleError
from authz.errors import UnsafePath
from authz.paths import MAX_METHOD
from authz.paths import canonical_object
from authz.rules import ANONYMOUS
from authz.rules import MAX_VALUE_LENGTH
from authz.rules import Rule
from authz.rules import is_role
from authz.rules import is_token
from authz.rules import is_user
from authz.snapshot import Snapshot

#: The outcomes an expectation may promise.
OUTCOMES = ("allow", "deny")
#: The audit log records an expectation as a row of this type.
AUDIT_TYPE = "test"
#: A note is a short sentence, not a document.
MAX_NOTE = 500
#: Bad lines of an expectations file listed by name; beyond these they are counted.
MAX_ERRORS = 100
#: Expectations a policy may hold: the check runs on every write.
MAX_EXPECTATIONS = 10_000
_METHOD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class Expectation(NamedTuple):
    """One promise: ``subject`` may (``allow``) or may not (``deny``) ``method path``."""

    subject: str
    method: str
    path: str
    outcome: str
    note: str = ""

    @property
    def request(self) -> tuple[str, str, str]:
        """The request it judges, in the engine's order (subject, path, method)."""
        return self.subject, self.path, self.method

    @property
    def request_key(self) -> tuple[str, str, str]:
        """The request it is about, as written (one expectation per request)."""
        return self.subject, self.method, self.path

    @property
    def id(self) -> str:
        """A stable identifier of the request (one expectation per request)."""
        text = "\x1f".join((self.subject, self.method, self.path))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    @property
    def allows(self) -> bool:
        """Whether the promise is that the request is allowed."""
        return self.outcome == "allow"

    def __str__(self) -> str:
        verb = "may" if self.allows else "may not"
        return f"{self.subject} {verb} {self.method} {self.path}"

    def as_list(self) -> list[str]:
        """The values of its CSV line."""
        values = [self.subject, self.method, self.path, self.outcome]
        return [*values, self.note] if self.note else values

    def as_rule(self) -> Rule:
        """Its row in the audit log."""
        return Rule(AUDIT_TYPE, tuple(self.as_list()))

    def as_dict(self) -> dict[str, str]:
        """A JSON-ready mapping, id included."""
        return {
            "id": self.id,
            "subject": self.subject,
            "method": self.method,
            "path": self.path,
            "outcome": self.outcome,
            "note": self.note,
        }


def expectation(
    subject: str,
    method: str,
    path: str,
    outcome: str,
    note: str = "",
    *,
    line: int | None = None,
) -> Expectation:
    """Return a checked expectation; RuleError names the bad field.

    Each value must already be in the one spelling the engine decides on: an email in
    lower case, a method in upper case, a path the router serves unchanged. A different
    spelling is refused, never folded: the promise is about exactly the request named.
    """
    _check_subject(subject, line)
    if not method or len(method) > MAX_METHOD or not set(method) <= _METHOD_CHARS:
        raise RuleError(
            "must be an HTTP method in upper case, such as GET or POST", line=line, field="method"
        )
    if method == "HEAD":
        raise RuleError("HEAD is decided as GET: write GET", line=line, field="method")
    if len(path) > MAX_VALUE_LENGTH:
        raise RuleError(f"longer than {MAX_VALUE_LENGTH} characters", line=line, field="path")
    if path != path.strip():
        raise RuleError("has leading or trailing spaces", line=line, field="path")
    if "%" in path or "?" in path or "#" in path:
        # The router decides on the decoded path, without its query: /files/%61dmin?x is
        # served as /files/admin.
        raise RuleError(
            "write the path as the router serves it: decoded, without a query or fragment",
            line=line,
            field="path",
        )
    try:
        canonical_object(path)
    except UnsafePath as e:
        raise RuleError(str(e), line=line, field="path") from None
    if outcome not in OUTCOMES:
        raise RuleError("must be allow or deny", line=line, field="outcome")
    if len(note) > MAX_NOTE:
        raise RuleError(f"longer than {MAX_NOTE} characters", line=line, field="note")
    if note.strip()[:1] in ("=", "+", "-", "@"):
        # A spreadsheet opening an export would run it as a formula (=HYPERLINK(...)).
        raise RuleError("must not start with = + - or @", line=line, field="note")
    for name, value in (("path", path), ("note", note)):
        if any(unicodedata.category(c) in ("Cc", "Cf") for c in value):
            # Controls, and invisible format characters (a right-to-left override shows
            # a test as another one).
            raise RuleError(
                "must not contain control or invisible formatting characters",
                line=line,
                field=name,
            )
    return Expectation(subject, method, path, outcome, note.strip())


def _check_subject(subject: str, line: int | None) -> None:
    if not subject or len(subject) > MAX_VALUE_LENGTH:
        raise RuleError(f"must be 1 to {MAX_VALUE_LENGTH} characters", line=line, field="subject")
    if subject == ANONYMOUS or is_role(subject) or is_token(subject) or is_user(subject):
        return
    folded = subject.strip().lower()
    if folded != subject and (is_user(folded) or is_role(folded)):
        raise RuleError(f"write it as {folded}", line=line, field="subject")
    raise RuleError("must be an email, a role, anonymous or token:NAME", line=line, field="subject")


def plan(
    stored: Iterable[Expectation],
    add: Iterable[Expectation] = (),
    remove: Iterable[Expectation] = (),
    *,
    replace_all: bool = False,
) -> tuple[tuple[Expectation, ...], tuple[Expectation, ...]]:
    """What a write of policy tests adds and removes over the ``stored`` ones.

    One identical to a stored test is no change; one for a stored request replaces it
    (the stored one is removed); ``remove`` names tests by request (outcome and note
    ignored); ``replace_all`` removes every stored test ``add`` does not hold. A test both
    removed and added is replaced. RuleError when more than MAX_EXPECTATIONS would be kept.
    """
    by_request = {e.request_key: e for e in stored}
    wanted = {e.request_key: e for e in add}
    gone = {e.request_key for e in remove}
    if replace_all:
        gone |= by_request.keys()
    gone -= wanted.keys()
    added = tuple(e for k, e in wanted.items() if by_request.get(k) != e)
    # Removed, or replaced by another outcome or note; named as they were stored.
    removed = tuple(
        e for k, e in by_request.items() if k in gone or (k in wanted and e != wanted[k])
    )
    kept = len(by_request) - len(removed) + len(added)
    if kept > MAX_EXPECTATIONS:
        raise RuleError(f"{kept} policy tests; at most {MAX_EXPECTATIONS} are kept")
    return added, removed


# -- running ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """An expectation judged on one snapshot: the decision, or why none was made."""

    expectation: Expectation
    decision: Decision | None
    error: str | None = None

    @property
    def passed(self) -> bool:
        """Whether the policy keeps the promise (an undecided request never does)."""
        return self.decision is not None and self.decision.allowed == self.expectation.allows

    @property
    def rule(self) -> Rule | None:
        """The rule that decided, if one did."""
        return self.decision.rule if self.decision is not None else None

    def why(self) -> str:
        """What the policy decides, and by which rule."""
        if self.decision is None:
            return f"not decided: {self.error}"
        verdict = "allowed" if self.decision.allowed else "denied"
        rule = self.decision.rule
        if rule is not None:
            return f"{verdict} by rule [{rule}]"
        return f"{verdict}: no rule matches" if not self.decision.allowed else verdict

    def __str__(self) -> str:
        mark = "pass" if self.passed else "FAIL"
        note = f" ({self.expectation.note})" if self.expectation.note else ""
        return f"{mark}: {self.expectation}{note}: {self.why()}"

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready mapping: the expectation, whether it passed, what decided."""
        return {
            "expectation": self.expectation.as_dict(),
            "passed": self.passed,
            "allowed": self.decision.allowed if self.decision is not None else None,
            "rule": self.rule.as_list() if self.rule is not None else None,
            "explain": self.why(),
        }


def judge(snapshot: Snapshot, item: Expectation) -> Result:
    """Decide one expectation's request on ``snapshot``."""
    try:
        decision = snapshot.decide(item.subject, item.path, item.method)
    except AuthzError as e:  # a refused policy: it keeps no promise
        return Result(item, None, str(e))
    return Result(item, decision)


def run(snapshot: Snapshot, expectations: Iterable[Expectation]) -> list[Result]:
    """Judge every expectation on ``snapshot``, in order."""
    return [judge(snapshot, e) for e in expectations]


def failures(snapshot: Snapshot, expectations: Iterable[Expectation]) -> list[Result]:
    """The expectations ``snapshot`` does not keep."""
    return [r for r in run(snapshot, expectations) if not r.passed]


def broken(before: Snapshot, after: Snapshot, expectations: Iterable[Expectation]) -> list[Result]:
    """The expectations ``before`` keeps and ``after`` does not, judged on ``after``.

    One failing before the change (a promise forced past) does not hold up changes that
    do not touch it. ``before`` is asked only about those that
    fail after: a change that breaks nothing costs one decision per expectation (this
    runs inside every policy write, so results are made only for failures).
    """
    decide = after.fast
    failing: list[Expectation] = []
    for item in expectations:
        try:
            if decide(item.subject, item.path, item.method).allowed is not (
                item.outcome == "allow"
            ):
                failing.append(item)
        except Exception:  # noqa: BLE001 - judged again below, where the reason is kept
            failing.append(item)
    return [
        result
        for result in (judge(after, e) for e in failing)
        if not result.passed and not _failed(judge(before, result.expectation))
    ]


def _failed(result: Result) -> bool:
    """Whether a policy decided against the promise (one that could not decide, such as a
    refused policy, broke nothing: the change that repairs it is judged like any other)."""
    return result.decision is not None and not result.passed


class ExpectationsBroken(AuthzError):
    """A change, or a new expectation, that the policy would not keep."""

    def __init__(
        self, results: Sequence[Result], *, adding: bool = False, unreadable: bool = False
    ) -> None:
        self.results = list(results)
        self.adding = adding
        #: The stored tests named do not read: no change can be judged until they are
        #: fixed or removed.
        self.unreadable = unreadable
        shown = "; ".join(f"{r.expectation} ({r.why()})" for r in self.results[:5])
        more = len(self.results) - 5
        if more > 0:
            shown += f"; and {more} more"
        count = len(self.results)
        if unreadable:
            head = (
                f"refused: {count} stored policy test(s) do not read, so no change can be "
                "checked; fix or remove them"
            )
        elif adding:
            head = f"refused: the policy does not keep {count} of these policy tests"
        else:
            head = f"refused: this change breaks {count} policy test(s)"
        super().__init__(f"{head}: {shown}")


# -- files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectationsFile:
    """The expectations of a file, in file order, with the line of each."""

    expectations: tuple[Expectation, ...]
    lines: tuple[int, ...] = ()
    path: str | None = None


def read_file(path: str | Path) -> ExpectationsFile:
    """Read an expectations file; PolicyFileError lists every bad line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise PolicyFileError([], str(path), message=f"cannot read: {e.strerror or e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyFileError([], str(path), message=f"not UTF-8 text: {e}") from e
    return parse(text, path=str(path))


def parse(text: str, *, path: str | None = None) -> ExpectationsFile:
    """Parse expectations text; with any bad line raise PolicyFileError (nothing kept)."""
    text = text.removeprefix("\ufeff")
    errors: list[RuleError] = []
    found: list[Expectation] = []
    lines: list[int] = []
    seen: dict[tuple[str, str, str], int] = {}
    more = 0
    for number, raw in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
        stripped = raw.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        try:
            fields = next(csv.reader([raw], skipinitialspace=True, strict=True))
        except csv.Error as e:
            error = RuleError(f"cannot parse: {e}", line=number)
        else:
            fields = [f.strip(" \t") for f in fields]
            while len(fields) > 4 and fields[-1] == "":
                fields.pop()
            if len(fields) not in (4, 5):
                error = RuleError(
                    f"an expectation has 4 or 5 values (subject, method, path, outcome, "
                    f"note), this line has {len(fields)}",
                    line=number,
                )
            else:
                try:
                    item = expectation(*fields, line=number)
                except RuleError as e:
                    error = e
                else:
                    key = (item.subject, item.method, item.path)
                    if key in seen:
                        error = RuleError(
                            f"the request {item.subject} {item.method} {item.path} is already "
                            f"expected on line {seen[key]}",
                            line=number,
                        )
                    else:
                        seen[key] = number
                        found.append(item)
                        lines.append(number)
                        continue
        if len(errors) < MAX_ERRORS:
            errors.append(error)
        else:
            more += 1
    if len(found) > MAX_EXPECTATIONS:
        errors.append(RuleError(f"{len(found)} expectations; at most {MAX_EXPECTATIONS} are kept"))
    if errors:
        raise PolicyFileError(errors, path, more=more)
    return ExpectationsFile(tuple(found), tuple(lines), path)


def write(expectations: Iterable[Expectation], out: TextIO) -> int:
    """Write expectations as CSV lines (quoted where needed); return how many."""
    writer = csv.writer(out, lineterminator="\n")
    count = 0
    for item in expectations:
        writer.writerow(item.as_list())
        count += 1
    return count


def export(expectations: Iterable[Expectation]) -> str:
    """The CSV text of expectations, with a header comment."""
    out = io.StringIO()
    out.write("# subject, method, path, outcome (allow or deny), note\n")
    write(expectations, out)
    return out.getvalue()
