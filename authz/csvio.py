"""Policy CSV: parse and validate a whole file, plan merge/replace, export round-trip.

The format is Casbin's: one row per line, ``ptype, value, value, ...``; ``#`` starts a
comment line; a value holding a comma or a quote is written in double quotes.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from authz.engine import Change
from authz.errors import PolicyFileError
from authz.errors import RuleError
from authz.model import PolicyModel
from authz.rules import Rule
from authz.rules import validate

#: Bad lines listed by name; beyond these they are only counted.
MAX_ERRORS = 100


@dataclass(frozen=True)
class PolicyFile:
    """The valid rows of a policy file, in file order."""

    rules: tuple[Rule, ...]
    path: str | None = None
    #: the line number of each rule, in the same order (empty for rules built in memory).
    lines: tuple[int, ...] = ()

    def line_of(self, rule: Rule) -> int | None:
        """Return the line a rule was read from, or None."""
        for found, line in zip(self.rules, self.lines, strict=False):
            if found == rule:
                return line
        return None


def read_file(path: str | Path, model: PolicyModel) -> PolicyFile:
    """Read and validate a policy file; PolicyFileError lists every bad line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        reason = f"cannot read the file: {e.strerror}"
        raise PolicyFileError([RuleError(reason)], str(path), message=reason) from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        reason = f"not UTF-8 text (byte {e.start})"
        raise PolicyFileError([RuleError(reason)], str(path), message=reason) from e
    return parse(text, model, path=str(path))


def parse(text: str, model: PolicyModel, *, path: str | None = None) -> PolicyFile:
    """Parse and validate policy text; with any bad line raise PolicyFileError."""
    text = text.removeprefix("\ufeff")
    errors: list[RuleError] = []
    rules: list[Rule] = []
    seen: dict[Rule, int] = {}
    # One physical line is one record: values may not contain line breaks, so a stray
    # quote can never swallow the lines after it, and a comment is never parsed as CSV.
    # Lines end at LF, CRLF or CR only (not at every break str.splitlines knows, such as
    # U+2028 or U+0085): line numbers match a text editor's, and a value holding such a
    # character stays in its line, where validation refuses it by name.
    physical = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    more = 0

    def bad(error: RuleError) -> None:
        nonlocal more
        if len(errors) < MAX_ERRORS:
            errors.append(error)
        else:
            more += 1  # listed by count only: the answer stays short

    for line, raw in enumerate(physical, start=1):
        stripped = raw.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        if len(errors) >= MAX_ERRORS and not rules:
            # Not one good row in the first hundred: this is not a policy file. Stop here,
            # so a large text file gets a short answer, and quickly.
            rest = sum(1 for r in physical[line - 1 :] if r.strip(" \t")[:1] not in ("", "#"))
            raise PolicyFileError(errors, path, unchecked=rest)
        try:
            fields = next(csv.reader([raw], skipinitialspace=True, strict=True))
        except csv.Error as e:
            bad(RuleError(f"cannot parse: {e}", line=line))
            continue
        fields = [f.strip(" \t") for f in fields]  # other whitespace is refused by name
        while len(fields) > 1 and fields[-1] == "":
            fields.pop()  # a trailing comma is harmless
        try:
            rule = validate(Rule(fields[0], tuple(fields[1:])), model, line=line)
        except RuleError as e:
            bad(e)
            continue
        if rule in seen:
            bad(RuleError(f"duplicates line {seen[rule]}: {rule}", line=line))
            continue
        seen[rule] = line
        rules.append(rule)
    if errors:
        raise PolicyFileError(errors, path, more=more)
    return PolicyFile(tuple(rules), path, tuple(seen.values()))


def plan(current: Iterable[Rule], wanted: Iterable[Rule], *, replace: bool) -> Change:
    """Return the change that merges ``wanted`` in, or makes the table equal to it."""
    have = list(dict.fromkeys(current))
    want = list(dict.fromkeys(wanted))
    have_set, want_set = set(have), set(want)
    add = tuple(r for r in want if r not in have_set)
    remove = tuple(r for r in have if r not in want_set) if replace else ()
    return Change(add=add, remove=remove)


def format_rule(rule: Rule) -> str:
    """Return the CSV line of one rule, quoting values that need it."""
    return ", ".join(_quote(v) for v in rule.as_list())


def export(rules: Iterable[Rule]) -> str:
    """Return CSV text that parses back to exactly these rules: p rows, then role rows."""
    ordered = sorted(rules, key=lambda r: (r.is_role_link, r.ptype))
    return "".join(format_rule(r) + "\n" for r in ordered)


def describe(change: Change) -> str:
    """Return a diff listing: ``+ row`` for additions, ``- row`` for removals."""
    lines = [f"- {format_rule(r)}" for r in change.remove]
    lines += [f"+ {format_rule(r)}" for r in change.add]
    return "\n".join(lines)


def _quote(value: str) -> str:
    # Values the write path accepts hold no line breaks or control characters, so quoting
    # commas and quotes (and a leading "#", which reads like a comment) is all it takes.
    if any(c in value for c in ',"') or value.startswith("#") or value != value.strip():
        return '"' + value.replace('"', '""') + '"'
    return value
