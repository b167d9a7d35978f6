"""Policy CSV: parse and validate a whole file, plan merge/replace, export round-trip.

The format is Casbin's: one row per line, ``ptype, value, value, ...``; ``#`` starts a
comment line; a value holding a comma or a quote is written in double quotes.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from dataclasses import field
from functools import cached_property
from pathlib import Path
from typing import TextIO

from authz.engine import Change
from authz.errors import PolicyFileError
from authz.errors import RuleError
from authz.model import PolicyModel
from authz.rules import Rule
from authz.rules import Validator
from authz.rules import is_role
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
    #: the model every rule was validated against when the file was read, or None.
    model: PolicyModel | None = field(default=None, compare=False, repr=False)

    def line_of(self, rule: Rule) -> int | None:
        """Return the line a rule was read from, or None."""
        return self._line_numbers.get(rule)

    @cached_property
    def _line_numbers(self) -> Mapping[Rule, int]:
        # Built on first use (parse hands over the one it made): a large file's warnings
        # and errors look lines up by row.
        return dict(zip(self.rules, self.lines, strict=False))


def read_file(path: str | Path, model: PolicyModel) -> PolicyFile:
    """Read and validate a policy file; PolicyFileError lists every bad line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        reason = f"cannot read the file: {e.strerror}"
        raise PolicyFileError([RuleError(reason)], str(path), message=reason) from e
    return parse(decode(raw, path=str(path)), model, path=str(path))


def decode(raw: bytes, *, path: str | None = None) -> str:
    """Decode a policy file's bytes (UTF-8, with or without a BOM).

    :raises PolicyFileError: naming the first byte that is not UTF-8, by its offset in
        the file and by its line and column (in characters, as a text editor counts).
    """
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = bom + e.start
        before = raw[bom:at].decode("utf-8")  # valid: decoding failed only at ``at``
        head = before.replace("\r\n", "\n").replace("\r", "\n")
        line = head.count("\n") + 1
        column = len(head) - (head.rfind("\n") + 1) + 1
        reason = f"not UTF-8 at byte {at} (line {line}, column {column})"
        raise PolicyFileError([RuleError(reason, line=line)], path, message=reason) from e


def parse(text: str, model: PolicyModel, *, path: str | None = None) -> PolicyFile:
    """Parse and validate policy text; with any bad line raise PolicyFileError."""
    text = text.removeprefix("\ufeff")
    errors: list[RuleError] = []
    rules: list[Rule] = []
    seen: dict[Rule, int] = {}
    check = Validator(model)  # validate's answers, the work per distinct value done once
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
        if '"' not in raw and "\0" not in raw:
            # No quotes: the csv module would split at each comma and nothing else (most
            # lines of a large file; the reader costs more than the split).
            fields = raw.split(",")
        else:
            try:
                fields = next(csv.reader([raw], skipinitialspace=True, strict=True))
            except csv.Error as e:
                bad(RuleError(f"cannot parse: {e}", line=line))
                continue
        fields = [f.strip(" \t") for f in fields]  # other whitespace is refused by name
        while len(fields) > 1 and fields[-1] == "":
            fields.pop()  # a trailing comma is harmless
        row = Rule(fields[0], tuple(fields[1:]))
        try:
            rule = check(row)
        except RuleError:
            try:  # the same error, with its line
                rule = validate(row, model, line=line)
            except RuleError as e:
                bad(e)
                continue
        if rule in seen:
            bad(RuleError(f"duplicates line {seen[rule]}: {rule}", line=line))
            continue
        seen[rule] = line
        rules.append(rule)
    for cycle in role_cycles(rules, model):
        lines = sorted(seen[r] for r in cycle)
        bad(
            RuleError(
                f"closes a role cycle: {cycle_text(cycle)} (lines {', '.join(map(str, lines))})",
                line=lines[-1],
                field="role",
            )
        )
    if errors:
        errors.sort(key=lambda e: e.line or 0)
        raise PolicyFileError(errors, path, more=more)
    policy = PolicyFile(tuple(rules), path, tuple(seen.values()), model)
    policy.__dict__["_line_numbers"] = seen  # the cached_property's value, made already
    return policy


def role_cycles(rules: Iterable[Rule], model: PolicyModel) -> list[tuple[Rule, ...]]:
    """Return one cycle of role-to-role links per tangle of roles that inherit in a ring.

    Each cycle lists its rows in inheritance order (``a -> b``, ``b -> c``, ``c -> a``).
    Only links whose member is a role count: a user or a token closes no cycle. Runs in
    time linear in the number of links (Tarjan's strongly connected components).
    """
    graphs: dict[str, dict[str, list[Rule]]] = {}
    for rule in rules:
        if rule.ptype in model.roles and len(rule.values) >= 2 and is_role(rule.values[0]):
            graph = graphs.setdefault(rule.ptype, {})
            graph.setdefault(rule.values[0], []).append(rule)
    found: list[tuple[Rule, ...]] = []
    for graph in graphs.values():
        for component in _components(graph):
            found.append(_one_cycle(graph, component))
    return found


def cycle_text(cycle: Iterable[Rule]) -> str:
    """``a -> b -> a`` for the rows of a cycle."""
    rows = list(cycle)
    return " -> ".join([r.values[0] for r in rows] + [rows[0].values[0]])


def _components(graph: dict[str, list[Rule]]) -> list[set[str]]:
    """The strongly connected components of more than one role (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in list(graph):
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, at = work.pop()
            if at == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            edges = graph.get(node, [])
            if at < len(edges):
                work.append((node, at + 1))
                nxt = edges[at].values[1]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or any(e.values[1] == node for e in edges):
                    out.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def _one_cycle(graph: dict[str, list[Rule]], component: set[str]) -> tuple[Rule, ...]:
    """A cycle through the component's first role (breadth-first: a shortest one)."""
    start = min(component)
    came: dict[str, Rule] = {}
    queue = [start]
    for node in queue:
        for edge in graph.get(node, []):
            nxt = edge.values[1]
            if nxt not in component:
                continue
            if nxt == start:
                path = [edge]
                while path[0].values[0] != start:
                    path.insert(0, came[path[0].values[0]])
                return tuple(path)
            if nxt not in came:
                came[nxt] = edge
                queue.append(nxt)
    raise AssertionError("a strongly connected component always holds a cycle")


def plan(current: Iterable[Rule], wanted: Iterable[Rule], *, replace: bool) -> Change:
    """Return the change that merges ``wanted`` in, or makes the table equal to it.

    ``current`` may be a set-like view of the stored rows (a million rows are then
    looked up in place, not copied).
    """
    have: Collection[Rule] = current if isinstance(current, AbstractSet) else dict.fromkeys(current)
    want = dict.fromkeys(wanted)
    add = tuple(r for r in want if r not in have)
    remove = tuple(r for r in have if r not in want) if replace else ()
    return Change(add=add, remove=remove)


def format_rule(rule: Rule) -> str:
    """Return the CSV line of one rule, quoting values that need it."""
    return ", ".join(_quote(v) for v in rule.as_list())


def export(rules: Iterable[Rule]) -> str:
    """Return CSV text that parses back to exactly these rules: p rows, then role rows."""
    return "".join(format_rule(r) + "\n" for r in sorted(rules, key=export_order))


def export_order(rule: Rule) -> tuple[bool, str]:
    """The sort key of an export: p rows, then role rows; by type; else as stored."""
    return (rule.is_role_link, rule.ptype)


def ptype_order(ptypes: Iterable[str]) -> list[str]:
    """Row types in export order (a streamed export writes one type after another)."""
    return sorted(set(ptypes), key=lambda p: (p.startswith("g"), p))


def write(rules: Iterable[Rule], out: TextIO, *, chunk: int = 10_000) -> int:
    """Write rules already in export order as CSV lines, as they come; return how many.

    Lines are written in chunks, so memory stays that of one chunk whatever the count.
    """
    count = 0
    lines: list[str] = []
    for rule in rules:
        lines.append(format_rule(rule))
        if len(lines) >= chunk:
            out.write("\n".join(lines) + "\n")
            count += len(lines)
            lines.clear()
    if lines:
        out.write("\n".join(lines) + "\n")
        count += len(lines)
    return count


def describe(change: Change) -> str:
    """Return a diff listing: ``+ row`` for additions, ``- row`` for removals."""
    lines = [f"- {format_rule(r)}" for r in change.remove]
    lines += [f"+ {format_rule(r)}" for r in change.add]
    return "\n".join(lines)


def _quote(value: str) -> str:
    # Values the write path accepts hold no line breaks or control characters, so quoting
    # commas and quotes (and a leading "#", which reads like a comment) is all it takes.
    if "," in value or '"' in value or value.startswith("#") or value != value.strip():
        return '"' + value.replace('"', '""') + '"'
    return value
