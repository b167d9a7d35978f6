"""authz.csvio: whole-file validation, merge/replace/dry-run plans, and export round trips."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from authz import csvio
from authz.engine import Change
from authz.engine import PolicyEngine
from authz.errors import PolicyFileError
from authz.errors import RuleError
from authz.model import PolicyModel
from authz.rules import Rule
from authz.rules import validate


def p(sub: str, obj: str, act: str, eft: str = "allow") -> Rule:
    """Build a p row."""
    return Rule.of("p", sub, obj, act, eft)


def g(member: str, role: str) -> Rule:
    """Build a g row."""
    return Rule.of("g", member, role)


def bad_lines(error: PolicyFileError) -> list[tuple[int | None, str | None]]:
    """Return (line, field) of every error a PolicyFileError lists."""
    return [(e.line, e.field) for e in error.errors]


# -- reading good files ----------------------------------------------------------------


def test_bom_and_crlf(model: PolicyModel, data_dir: Path) -> None:
    """A UTF-8 BOM and CRLF line endings parse like plain LF text."""
    path = data_dir / "good_bom_crlf.csv"
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw  # the corpus file is what it claims
    assert csvio.read_file(path, model).rules == (
        p("anonymous", "/login", "GET|POST"),
        p("user", "/reports/*", "GET"),
        g("admin", "user"),
    )


def test_bom_in_text(model: PolicyModel) -> None:
    """parse() drops a BOM at the start of text it is given directly."""
    assert csvio.parse("\ufeffg, admin, user\r\n", model).rules == (g("admin", "user"),)


def test_quotes_comments_blank_lines(model: PolicyModel, data_dir: Path) -> None:
    """Quoted commas and doubled quotes, comments, blank lines, tight and trailing commas."""
    policy = csvio.read_file(data_dir / "good_quoted.csv", model)
    assert policy.rules == (
        p("user", "/a,b", "GET"),
        p("user", '/say/"hi"', "GET|POST", "deny"),
        p("user", "/tight", "GET"),
        p("user", "/trailing-comma", "GET"),
        g("alice@example.com", "admin"),
    )
    assert policy.path == str(data_dir / "good_quoted.csv")


def test_quoted_comma_inline(model: PolicyModel) -> None:
    """`p, user, "/a,b", GET` is one path holding a comma."""
    assert csvio.parse('p, user, "/a,b", GET\n', model).rules == (p("user", "/a,b", "GET"),)


def test_default_policy_parses(model: PolicyModel, default_rules: tuple[Rule, ...]) -> None:
    """The shipped default.csv is valid and has the documented role chain."""
    assert g("user", "anonymous") in default_rules
    assert g("admin", "user") in default_rules
    assert len(default_rules) == 20


# -- reading bad files -----------------------------------------------------------------

#: file in tests/data -> the (line, field) of every error it must report
BAD_FILES = [
    pytest.param("bad_arity.csv", [(3, None)], id="arity"),
    pytest.param("bad_unknown_ptype.csv", [(3, None)], id="unknown-ptype"),
    pytest.param("bad_regex.csv", [(2, "act")], id="broken-regex"),
    pytest.param("bad_role_name.csv", [(3, "role")], id="bad-role-name"),
    pytest.param("bad_empty_subject.csv", [(2, "sub")], id="empty-subject"),
    pytest.param("bad_duplicate.csv", [(4, None)], id="duplicate-row"),
    pytest.param("bad_unterminated_quote.csv", [(2, None)], id="unterminated-quote"),
    pytest.param("bad_three_lines.csv", [(3, None), (5, "obj"), (7, "eft")], id="three-bad-lines"),
]


@pytest.mark.parametrize(("name", "expected"), BAD_FILES)
def test_bad_files_report_every_bad_line(
    model: PolicyModel, data_dir: Path, name: str, expected: list[tuple[int, str | None]]
) -> None:
    """PolicyFileError lists each bad line with its number and field, and nothing else."""
    path = data_dir / name
    with pytest.raises(PolicyFileError) as info:
        csvio.read_file(path, model)
    assert bad_lines(info.value) == expected
    assert info.value.path == str(path)
    message = str(info.value)
    assert f"{len(expected)} bad line(s), nothing was changed" in message
    for line, _field in expected:
        assert f"line {line}: " in message


def test_duplicate_names_the_first_occurrence(model: PolicyModel, data_dir: Path) -> None:
    """A duplicated row points back at the line it repeats (after normalization)."""
    with pytest.raises(PolicyFileError) as info:
        csvio.read_file(data_dir / "bad_duplicate.csv", model)
    assert "duplicates line 1" in info.value.errors[0].message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("p, user\nq, a, b\n", [(1, None), (2, None)], id="two-in-a-row"),
        pytest.param(
            "p, Admin, /, GET\np, user, /, GET|(\ng, admin, admin\ng, admin, alice@example.com\n",
            [(1, "sub"), (2, "act"), (3, "role"), (4, "role")],
            id="four-fields",
        ),
        pytest.param(
            "# ok\n\np, user, /\r\n\r\np, user, x, GET\r\n",
            [(3, None), (5, "obj")],
            id="numbers-count-comments-and-blanks",
        ),
        pytest.param("p, user, /a\x00, GET\n", [(1, "obj")], id="control-char"),
    ],
)
def test_parse_reports_every_bad_line(
    model: PolicyModel, text: str, expected: list[tuple[int, str | None]]
) -> None:
    """parse() keeps going after a bad line so that one run reports them all."""
    with pytest.raises(PolicyFileError) as info:
        csvio.parse(text, model)
    assert bad_lines(info.value) == expected


def test_missing_file(model: PolicyModel, tmp_path: Path) -> None:
    """A file that cannot be read is a PolicyFileError, not an OSError."""
    with pytest.raises(PolicyFileError, match="cannot read the file"):
        csvio.read_file(tmp_path / "nope.csv", model)


def test_not_utf8(model: PolicyModel, tmp_path: Path) -> None:
    """A file in another encoding is refused with the offending byte."""
    path = tmp_path / "latin1.csv"
    path.write_bytes("p, user, /caf\u00e9, GET\n".encode("latin-1"))
    with pytest.raises(PolicyFileError, match="not UTF-8"):
        csvio.read_file(path, model)


def test_a_comment_never_hides_the_rules_after_it(model: PolicyModel, data_dir: Path) -> None:
    """A quote inside a comment line has no effect on the lines that follow."""
    assert csvio.read_file(data_dir / "good_comment_quote.csv", model).rules == (
        p("user", "/reports/*", "GET"),
        p("user", "/", "GET"),
    )


def test_unterminated_quote_is_reported_where_it_opens(model: PolicyModel, data_dir: Path) -> None:
    """The error for an unclosed quote names the line holding the opening quote."""
    with pytest.raises(PolicyFileError) as info:
        csvio.read_file(data_dir / "bad_unterminated_quote_midfile.csv", model)
    assert bad_lines(info.value) == [(2, None)]


def test_a_csv_syntax_error_does_not_hide_later_bad_lines(
    model: PolicyModel, data_dir: Path
) -> None:
    """After a stray character behind a closing quote, the later bad lines are still listed."""
    with pytest.raises(PolicyFileError) as info:
        csvio.read_file(data_dir / "bad_quote_then_more.csv", model)
    assert bad_lines(info.value) == [(1, None), (3, None)]


# -- merge, replace, dry run -----------------------------------------------------------


def test_merge_adds_only_missing_rows(
    engine: PolicyEngine,
    model: PolicyModel,
    data_dir: Path,
    default_rules: tuple[Rule, ...],
    db_state: Callable,
) -> None:
    """--merge adds the file's rows that are missing and removes nothing."""
    wanted = csvio.read_file(data_dir / "good_small.csv", model).rules
    change = csvio.plan(engine.rules(), wanted, replace=False)
    assert change == Change(add=(p("user", "/reports/*", "GET"),), remove=())
    applied = engine.apply(change, actor="test", source="cli")
    assert applied.added == (p("user", "/reports/*", "GET"),)
    assert set(db_state().rules) == set(default_rules) | {p("user", "/reports/*", "GET")}


def test_merge_of_a_file_already_in_the_database_is_empty(
    engine: PolicyEngine, default_rules: tuple[Rule, ...]
) -> None:
    """Merging the same rows again plans nothing."""
    assert not csvio.plan(engine.rules(), default_rules, replace=False)


def test_replace_makes_the_table_equal_to_the_file(
    engine: PolicyEngine, model: PolicyModel, data_dir: Path, db_state: Callable
) -> None:
    """--replace adds what is missing and removes what the file lacks, in one revision."""
    wanted = csvio.read_file(data_dir / "good_small.csv", model).rules
    change = csvio.plan(engine.rules(), wanted, replace=True)
    assert p("user", "/logout", "GET|POST") in change.remove
    assert change.add == (p("user", "/reports/*", "GET"),)
    before = db_state()
    engine.apply(change, actor="test", source="cli")
    after = db_state()
    assert after.rules == tuple(sorted(wanted))
    assert after.revision == before.revision + 1
    assert after.audit_count == before.audit_count + 1
    assert set(engine.rules()) == set(wanted)


def test_dry_run_plans_and_describes_without_changing_anything(
    engine: PolicyEngine, model: PolicyModel, data_dir: Path, db_state: Callable
) -> None:
    """--dry-run is plan + describe: the diff is printed, the database is untouched."""
    before = db_state()
    wanted = csvio.read_file(data_dir / "good_small.csv", model).rules
    diff = csvio.describe(csvio.plan(engine.rules(), wanted, replace=True))
    lines = diff.splitlines()
    assert "+ p, user, /reports/*, GET, allow" in lines
    assert "- p, user, /logout, GET|POST, allow" in lines
    assert lines == sorted(lines, key=lambda line: line[0] != "-")  # removals first
    assert all(line[:2] in ("+ ", "- ") for line in lines)
    assert db_state() == before


@pytest.mark.parametrize(
    ("current", "wanted", "replace", "add", "remove"),
    [
        pytest.param([], [g("a", "b")], False, [g("a", "b")], [], id="empty-db"),
        pytest.param([g("a", "b")], [], False, [], [], id="merge-empty-file"),
        pytest.param([g("a", "b")], [], True, [], [g("a", "b")], id="replace-empty-file"),
        pytest.param(
            [g("a", "b"), g("a", "b")],
            [g("c", "d"), g("c", "d")],
            True,
            [g("c", "d")],
            [g("a", "b")],
            id="duplicates-collapse",
        ),
    ],
)
def test_plan(
    current: list[Rule], wanted: list[Rule], replace: bool, add: list[Rule], remove: list[Rule]
) -> None:
    """plan() is a pure diff of two row lists."""
    assert csvio.plan(current, wanted, replace=replace) == Change(tuple(add), tuple(remove))


# -- export ----------------------------------------------------------------------------

TRICKY = [
    p("user", "/a,b", "GET"),
    p("user", "/a, b", "GET|POST"),
    p("user", '/say/"hi"', "GET", "deny"),
    p("user", '/"', ".*"),
    p("user", "/x", "#GET"),
    p("user", "/x", '"GET"|POST'),
    p("alice@example.com", "/users/:id", "(GET|POST)"),
    p("user", "*", "GET"),
    p("user", "/caf\u00e9", "GET"),
]


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param(TRICKY, id="commas-quotes-hashes"),
        pytest.param([g("alice@example.com", "admin"), g("admin", "user"), *TRICKY], id="mixed"),
        pytest.param([], id="empty"),
    ],
)
def test_export_parses_back_to_the_same_rules(model: PolicyModel, rules: list[Rule]) -> None:
    """export() writes CSV that parse() reads back to exactly the same rule set."""
    text = csvio.export(rules)
    assert sorted(csvio.parse(text, model).rules) == sorted(rules)


def test_export_round_trip_through_the_database(
    engine: PolicyEngine, model: PolicyModel, tmp_path: Path
) -> None:
    """Rows with commas and quotes survive store, export, file and re-import unchanged."""
    engine.apply(Change.adding(*TRICKY), actor="test", source="cli")
    engine.load()
    path = tmp_path / "export.csv"
    path.write_text(csvio.export(engine.rules()), encoding="utf-8")
    reread = csvio.read_file(path, model).rules
    assert sorted(reread) == sorted(engine.rules())
    assert not csvio.plan(engine.rules(), reread, replace=True)


def test_export_puts_policy_rows_before_role_rows(default_rules: tuple[Rule, ...]) -> None:
    """Exported files list p rows first, then g rows, each group in its original order."""
    lines = csvio.export(reversed(default_rules)).splitlines()
    assert [line.split(",")[0] for line in lines] == ["p"] * 18 + ["g"] * 2
    assert lines[0] == "p, admin, /metrics, GET, allow"
    assert lines[-1] == "g, user, anonymous"


@pytest.mark.parametrize(
    ("rule", "line"),
    [
        (p("user", "/", "GET"), "p, user, /, GET, allow"),
        (p("user", "/a,b", "GET"), 'p, user, "/a,b", GET, allow'),
        (p("user", '/a"b', "GET"), 'p, user, "/a""b", GET, allow'),
        (p("user", "/x", "#GET"), 'p, user, /x, "#GET", allow'),
    ],
)
def test_format_rule_quotes_only_when_needed(rule: Rule, line: str) -> None:
    """Plain values stay bare; commas, quotes and leading '#' are quoted."""
    assert csvio.format_rule(rule) == line


# -- round trips for every value the write path accepts --------------------------------

#: Characters str.splitlines() (and so many tools) treat as line breaks, and other
#: characters a single-line, visible value must not hold.
LINE_BREAKS_AND_INVISIBLES = [
    "\u2028",  # LINE SEPARATOR
    "\u2029",  # PARAGRAPH SEPARATOR
    "\u0085",  # NEXT LINE (C1)
    "\x1c",
    "\x1d",
    "\x1e",
    "\x0b",
    "\x0c",
    "\r",
    "\n",
    "\x9b",  # C1 control sequence introducer
    "\u200b",  # ZERO WIDTH SPACE
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE: a rule that displays as another
    "\ufeff",  # ZERO WIDTH NO-BREAK SPACE (a BOM inside a value)
    "\ud800",  # a lone surrogate: not encodable as UTF-8
]


@pytest.mark.parametrize("char", LINE_BREAKS_AND_INVISIBLES, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("where", ["sub", "obj", "act"])
def test_the_write_path_refuses_line_breaks_and_invisible_characters(
    model: PolicyModel, char: str, where: str
) -> None:
    """Such a value could not be exported and read back as the same row: refused by name."""
    values = {"sub": "user", "obj": "/a", "act": "GET"}
    values[where] = values[where][:1] + char + values[where][1:]
    with pytest.raises(RuleError) as info:
        validate(Rule.of("p", values["sub"], values["obj"], values["act"], "allow"), model)
    assert info.value.field == where
    assert f"U+{ord(char):04X}" in info.value.message


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\u0085", "\x1c", "\x0b", "\x0c"])
def test_a_file_with_a_unicode_line_break_in_a_value_names_the_line(
    model: PolicyModel, char: str
) -> None:
    """The loader splits lines at LF/CR only: the value stays whole and is refused on its line."""
    text = f"p, user, /a, GET\np, user, /b{char}c, GET\np, user, /d, GET\n"
    with pytest.raises(PolicyFileError) as info:
        csvio.parse(text, model)
    assert bad_lines(info.value) == [(2, "obj")]


@pytest.mark.parametrize(
    "rule",
    [
        p("user", "/a,b", "GET"),
        p("user", '/say "hi"', "GET"),
        p("user", '/"quoted"', "GET"),
        p("user", "/x", "#GET"),
        p("ops@example.com", "/#frag", "GET"),
        p("user", "/with spaces inside", "GET|POST"),
        p("user", "/a, b", "GET"),
        p("user", "/\u00e9t\u00e9/\u6771\u4eac/\U0001f600", "GET"),
        p("user", "/nbsp\u00a0inside", "GET"),
        p("user", "/x", "G(E|T)"),
        p("user", "/trailing-backslash\\", "GET"),
        g("alice@example.com", "admin"),
        g("o'brien+ops@example.com", "admin"),
    ],
    ids=str,
)
def test_tricky_values_round_trip(model: PolicyModel, rule: Rule) -> None:
    """Commas, quotes, a leading '#', inner spaces and non-ASCII survive export and parse."""
    assert csvio.parse(csvio.export([rule]), model).rules == (validate(rule, model),)


def test_a_bom_before_the_first_row_is_not_part_of_its_type(
    model: PolicyModel, tmp_path: Path
) -> None:
    """An exported file saved by an editor that adds a BOM still loads the same rows."""
    rules = [p("user", "/a", "GET"), g("admin", "user")]
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csvio.export(rules).encode("utf-8"))
    assert csvio.read_file(path, model).rules == tuple(rules)


def test_line_numbers_are_kept_for_each_rule(model: PolicyModel) -> None:
    """Warnings about a loaded row can name its line."""
    policy = csvio.parse("# head\n\np, user, /a, GET\ng, admin, user\n", model)
    assert policy.lines == (3, 4)
    assert policy.line_of(g("admin", "user")) == 4
    assert policy.line_of(g("nobody", "user")) is None


# Hypothesis: whatever rows the write path accepts, export then parse gives them back.

_any_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)
_roles = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
_emails = st.builds(lambda a, b: f"{a}@{b}", _any_text, _any_text)
_subjects = st.one_of(_roles, _emails, st.just("anonymous"))
_paths = st.one_of(st.just("*"), st.builds(lambda t: "/" + t, _any_text))
_methods = st.one_of(st.sampled_from(["GET", "GET|POST", ".*", "(GET)"]), _any_text)


def _accepted(rule: Rule, model: PolicyModel) -> Rule | None:
    try:
        return validate(rule, model)
    except RuleError:
        return None


@st.composite
def accepted_rules(draw: st.DrawFn, model: PolicyModel) -> list[Rule]:
    """A list of distinct rows, each one the write path accepts."""
    candidates = draw(
        st.lists(
            st.one_of(
                st.builds(
                    lambda s, o, a, e: Rule.of("p", s, o, a, e),
                    _subjects,
                    _paths,
                    _methods,
                    st.sampled_from(["allow", "deny"]),
                ),
                st.builds(lambda m, r: Rule.of("g", m, r), _subjects, _roles),
            ),
            max_size=8,
        )
    )
    valid = [r for r in (_accepted(c, model) for c in candidates) if r is not None]
    return list(dict.fromkeys(valid))


_MODEL = PolicyModel.from_file(Path(__file__).resolve().parents[3] / "model.conf")


@settings(max_examples=300, deadline=None)
@given(accepted_rules(_MODEL))
def test_export_then_parse_gives_back_every_accepted_row(rules: list[Rule]) -> None:
    """For any rows the write path accepts, export -> parse returns exactly those rows.

    Rows that each pass but together make roles inherit in a ring are not accepted as a
    policy (the write path refuses the row that closes it, and so does the parser).
    """
    assume(not csvio.role_cycles(rules, _MODEL))
    assert sorted(csvio.parse(csvio.export(rules), _MODEL).rules) == sorted(rules)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=30))
def test_any_value_is_refused_or_round_trips(value: str) -> None:
    """A value in any column is either refused at write time or exported and read back as-is."""
    for rule in (
        Rule.of("p", "user", "/" + value, "GET", "allow"),
        Rule.of("p", "user", "/", value),
    ):
        accepted = _accepted(rule, _MODEL)
        if accepted is not None:
            assert csvio.parse(csvio.export([accepted]), _MODEL).rules == (accepted,)


# -- the error list is capped -------------------------------------------------------------


def test_the_error_list_names_the_first_hundred_and_counts_the_rest(model: PolicyModel) -> None:
    good = "p, user, /ok, GET, allow\n"
    text = good + "".join(f"p, user, /bad/{i}\n" for i in range(250))
    with pytest.raises(PolicyFileError) as info:
        csvio.parse(text, model)
    error = info.value
    assert len(error.errors) == 100 and error.more == 150 and error.unchecked == 0
    assert error.errors[0].line == 2 and error.errors[-1].line == 101
    message = str(error)
    assert message.startswith("250 bad line(s), nothing was changed")
    assert message.endswith("... and 150 more bad line(s)")
    assert len(message.splitlines()) == 102


def test_a_large_text_file_that_is_no_policy_gets_a_short_answer_quickly(
    model: PolicyModel, tmp_path: Path
) -> None:
    import time

    prose = "It was a dark and stormy night, and the rain fell in torrents.\n"
    path = tmp_path / "novel.txt"
    path.write_text(prose * (5_000_000 // len(prose)) + "# the end\n", encoding="utf-8")
    assert path.stat().st_size >= 4_900_000
    start = time.monotonic()
    with pytest.raises(PolicyFileError) as info:
        csvio.read_file(path, model)
    assert time.monotonic() - start < 2
    message = str(info.value)
    lines = message.splitlines()
    assert len(lines) <= 103 and len(message) < 20_000
    assert lines[-1].endswith("not checked: this is not a policy file")
    assert info.value.unchecked == 5_000_000 // len(prose) - 100


# -- where a file stops being UTF-8 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "at", "line", "column"),
    [
        pytest.param(b"p, user, /caf\xe9, GET\n", 13, 1, 14, id="latin-1"),
        pytest.param(
            b"\xef\xbb\xbfp, a, /, GET\np, user, /\xc3\xa9t\xe9\n", 29, 2, 13, id="bom-multibyte"
        ),
        pytest.param(b"# c\r\np, user, /x\xff\r\n", 16, 2, 12, id="crlf"),
        pytest.param(b"# c\rp\xff", 5, 2, 2, id="lone-cr"),
        pytest.param(b"p, user, /\xc3", 10, 1, 11, id="cut-multibyte"),
        pytest.param(b"\xfe", 0, 1, 1, id="first-byte"),
    ],
)
def test_not_utf8_names_the_byte_line_and_column(
    model: PolicyModel, tmp_path: Path, raw: bytes, at: int, line: int, column: int
) -> None:
    """The byte offset counts from 0 in the file (BOM included); the column counts
    characters from 1, as a text editor does, so multi-byte characters count once."""
    path = tmp_path / "policy.csv"
    path.write_bytes(raw)
    with pytest.raises(PolicyFileError) as info:
        csvio.read_file(path, model)
    assert str(info.value) == f"{path}: not UTF-8 at byte {at} (line {line}, column {column})"
    assert bad_lines(info.value) == [(line, None)]


# -- role cycles ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("g, a, b\ng, b, a\n", [(2, "a -> b -> a (lines 1, 2)")], id="two-roles"),
        pytest.param(
            "p, a, /, GET\ng, a, b\n# note\ng, b, c\ng, c, a\n",
            [(5, "a -> b -> c -> a (lines 2, 4, 5)")],
            id="three-roles",
        ),
        pytest.param(
            "g, x, y\ng, a, b\ng, y, x\ng, b, a\n",
            [(3, "x -> y -> x (lines 1, 3)"), (4, "a -> b -> a (lines 2, 4)")],
            id="two-cycles",
        ),
        pytest.param(
            "g, a, b\np, a, /, GET|(\ng, b, a\n",
            [(2, None), (3, "a -> b -> a (lines 1, 3)")],
            id="with-a-bad-line",
        ),
    ],
)
def test_a_role_cycle_names_its_lines(
    model: PolicyModel, text: str, expected: list[tuple[int, str | None]]
) -> None:
    """Every row of the cycle is named by line; the error sits on the line that closes it."""
    with pytest.raises(PolicyFileError) as info:
        csvio.parse(text, model, path="deploy.csv")
    found = [(e.line, e.message) for e in info.value.errors]
    assert [line for line, _ in found] == [line for line, _ in expected]
    for (_, message), (_, cycle) in zip(found, expected, strict=True):
        if cycle is not None:
            assert message == f"closes a role cycle: {cycle}"
    assert str(info.value).startswith("deploy.csv: ")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("g, alice@example.com, a\ng, a, b\n", id="a-user-closes-none"),
        pytest.param("g, a, b\ng, b, c\ng, a, c\n", id="a-diamond-is-no-cycle"),
        pytest.param("g, token:ci, a\ng, a, b\n", id="a-token-closes-none"),
    ],
)
def test_links_without_a_cycle_pass(model: PolicyModel, text: str) -> None:
    assert len(csvio.parse(text, model).rules) == text.count("\n")


def test_cycles_are_per_role_type(data_dir: Path) -> None:
    """``g`` and ``g2`` are separate hierarchies: a ring across them is no cycle."""
    two = PolicyModel.from_file(data_dir / "model_two_role_types.conf")
    assert csvio.parse("g, a, b\ng2, b, a, d1\n", two).rules
    with pytest.raises(PolicyFileError, match=r"line 2: role: closes a role cycle: a -> b -> a"):
        csvio.parse("g2, a, b, d1\ng2, b, a, d1\n", two)


def test_role_cycles_on_a_long_chain(model: PolicyModel) -> None:
    """A chain far deeper than Python's recursion limit is checked, and its ring found."""
    chain = [g(f"r{i}", f"r{i + 1}") for i in range(20_000)]
    assert csvio.role_cycles(chain, model) == []
    closing = g("r20000", "r0")
    cycles = csvio.role_cycles([*chain, closing], model)
    assert len(cycles) == 1 and len(cycles[0]) == 20_001
    assert closing in cycles[0]
    assert csvio.cycle_text(cycles[0]).startswith("r0 -> r1 -> ")
