"""Command line: ``flask --app service db|users|roles|policy|tokens`` and the ``authz`` script."""

from __future__ import annotations

import getpass
import logging
import os
import sys
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from typing import Literal
from typing import TextIO

import click
from flask import Flask
from flask import current_app
from flask.cli import AppGroup
from flask.cli import FlaskGroup
from flask.cli import with_appcontext
from sqlalchemy.exc import SQLAlchemyError

from authz import AuthzError
from authz import Change
from authz import PolicyEngine
from authz import Rule
from authz import RuleError
from authz import csvio
from authz import expectations
from authz import views
from authz.errors import PolicyFileError
from authz.errors import database_reason
from authz.expectations import Expectation
from authz.expectations import ExpectationsBroken
from authz.expectations import Result
from authz.whatif import WhatIf
from service import editing
from service import loading
from service import mail
from service import migrations
from service import params
from service import policy_tests
from service import tokens
from service import users
from service.bootstrap import init_database
from service.bootstrap import upgrade_database
from service.config import ConfigError

#: Exit statuses every command shares (``policy check`` has its own: see its help).
EXIT_STATUSES = (
    "Exit status: 0 done (or nothing to do), 1 refused or invalid input, "
    "2 usage error (unknown option, missing argument, conflicting options), "
    "3 the service cannot decide (database unreachable or not initialised, policy "
    "not loaded, configuration error)."
)


db_cli = AppGroup("db", help="Upgrade (migrate) and initialise the database.")
users_cli = AppGroup("users", help="Manage accounts.")
roles_cli = AppGroup("roles", help="Manage role assignments (g rows).")
policy_cli = AppGroup("policy", help="Load, export, check and test the policy.")
tokens_cli = AppGroup("tokens", help="Manage service tokens (bearer credentials of programs).")
tests_cli = AppGroup(
    "tests", help="Manage policy tests: promised decisions every policy change must keep."
)

#: Help of ``--dry-run`` on the commands that write one change.
DRY_RUN_HELP = (
    "Show who would gain and lose access and which policy tests would flip, and whether "
    "the change would be refused; write nothing."
)
#: Help of ``--force`` on the commands that write the policy.
FORCE_HELP = (
    "Even if it breaks a policy test or nobody could open the policy editor after it "
    "(recorded in the audit log)."
)


def actor() -> str:
    """The audit actor for commands: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def fail(message: str) -> None:
    """Stop with a one-line error and exit status 1."""
    raise click.ClickException(message)


def ok(message: str) -> None:
    """Print a one-line success message."""
    click.secho(message, fg="green")


def warn(message: str) -> None:
    """Print a warning on standard error."""
    click.secho(message, fg="yellow", err=True)


def shown(text: str) -> str:
    """Text with its control and invisible formatting characters written as escapes.

    A policy test's note or path comes from a file someone else may have written: a
    terminal control sequence could rewrite the screen, and a bidirectional override or
    zero-width mark could make one promise read as another.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


#: Risk warnings printed in full; beyond these they are counted.
MAX_WARNINGS = 20
#: Rows of a real load whose risks are analysed (about 0.1 ms a row); a dry run
#: analyses every row, so a large file can be looked at in full before it is loaded.
MAX_ANALYSED = 2_000


def warn_risks(
    rules: Sequence[Rule], where: csvio.PolicyFile | None = None, *, limit: int | None = None
) -> None:
    """Print the risks of rows written (accepted, worth a second look) in yellow to stderr.

    :param limit: analyse only the first this many rows, and say so when there are more.
    """
    known: dict[str, bool] = {}  # one account lookup per subject, not per row
    shown = more = 0
    for rule in rules[:limit] if limit is not None else rules:
        messages = users.rule_warnings(rule, known=known)
        if not messages:
            continue
        line = where.line_of(rule) if where is not None else None
        head = f"line {line}: " if line is not None else ""
        for message in messages:
            if shown < MAX_WARNINGS:
                warn(f"warning: {head}[{rule}] {message}")
                shown += 1
            else:
                more += 1
    if more:
        warn(f"warning: and {more} more warning(s) not listed")
    if limit is not None and len(rules) > limit:
        warn(
            f"note: risks analysed for the first {limit} of {len(rules)} rows written; "
            "`policy load --dry-run` analyses every row"
        )


class Failed(click.ClickException):
    """A one-line error (exit status 1: refused or invalid input)."""

    exit_code = editing.EXIT_INVALID


class CheckFailed(Failed):
    """``policy check`` could not decide (exit status 2, apart from 1 for deny)."""

    exit_code = 2


class Unavailable(Failed):
    """The service cannot decide: database unreachable, policy not loaded (exit status 3)."""

    exit_code = editing.EXIT_UNAVAILABLE


#: The error class of each exit status.
BY_STATUS: dict[int, type[Failed]] = {
    cls.exit_code: cls for cls in (Failed, CheckFailed, Unavailable)
}


def failure(message: str, status: int) -> Failed:
    """A one-line error ending the command with ``status``."""
    return BY_STATUS[status](message)


class _Errors:
    """Turn user errors into one-line ClickExceptions, never tracebacks.

    :param status: the exit status of every error (``policy check`` answers 2 for all);
        by default 1 for a refusal or invalid input and 3 when the service cannot decide.
    """

    def __init__(self, status: int | None = None) -> None:
        self.status = status

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, _tb: Any) -> Literal[False]:
        if error is None or isinstance(error, click.UsageError):
            return False
        if isinstance(error, click.ClickException):
            if self.status is not None and error.exit_code != self.status:
                raise failure(error.message, self.status) from error
            return False
        if isinstance(error, ExpectationsBroken) and self.status is None:
            raise failure(_refused_by_tests(error), editing.EXIT_INVALID) from error
        known = users.AccountError | AuthzError | ConfigError | params.BadParam | editing.EditError
        if isinstance(error, known):
            status = editing.exit_code(error) if self.status is None else self.status
            raise failure(str(error), status) from error
        if isinstance(error, SQLAlchemyError):
            raise failure(
                f"the database is unreachable or not initialised (run `db init`): "
                f"{database_reason(error)}",
                editing.EXIT_UNAVAILABLE if self.status is None else self.status,
            ) from error
        return False


errors = _Errors


def _refused_by_tests(error: ExpectationsBroken) -> str:
    """Print every policy test a write would break (and the rule that would decide it) on
    standard error; return the one-line refusal."""
    for result in error.results:
        click.secho(f"  {shown(str(result))}", fg="red", err=True)
    count = len(error.results)
    if error.unreadable:
        head = (
            f"refused: {count} stored policy test(s) do not read (listed above), so no change "
            "can be checked; fix them or remove them with `tests remove ID`"
        )
    elif error.adding:
        head = f"refused: the policy does not keep {count} of these policy test(s) (listed above)"
    else:
        head = f"refused: this change breaks {count} policy test(s) (listed above)"
    context = click.get_current_context(silent=True)
    forcible = context is not None and any(p.name == "force" for p in context.command.params)
    hint = "; --force writes it anyway, recorded in the audit log" if forcible else ""
    return f"{head}; nothing was written{hint}"


class FriendlyCommand(click.Command):
    """A command whose user errors end in one line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        with errors():
            return super().invoke(ctx)


for _group in (db_cli, users_cli, roles_cli, policy_cli, tokens_cli, tests_cli):
    _group.command_class = FriendlyCommand
    _group.epilog = EXIT_STATUSES


# -- db ---------------------------------------------------------------------------------


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the schema to REVISION (default: the one this release needs); keep every row.

    A database made by a release without migrations is adopted at the baseline first.
    """
    with errors():
        report = upgrade_database(revision)
    _print_upgrade(report)


@db_cli.command("current")
def db_current() -> None:
    """Print the database's schema revision and whether an upgrade is pending."""
    from service.extensions import db

    with errors(), db.engine.connect() as connection:
        revision = migrations.current(connection)
    head = migrations.head()
    if revision == head:
        ok(f"Schema at revision {revision} (current).")
    elif revision is not None and not migrations.known(revision):
        fail(f"schema at revision {revision}, newer than this release knows (up to {head})")
    else:
        click.secho(
            f"Schema at revision {revision or 'none'}; this release needs {head}: "
            "run `db upgrade`.",
            fg="yellow",
        )


@db_cli.command("init")
@click.option(
    "--admin-email",
    default="",
    help="Create this admin account when no active account can open the policy editor.",
)
@click.option("--admin-password", default="", help="Its password (generated when omitted).")
def db_init(admin_email: str, admin_password: str) -> None:
    """Upgrade the schema; load the default policy when the policy table is empty."""
    with errors():
        report = init_database(
            admin_email=admin_email, admin_password=admin_password, actor=actor()
        )
    _print_init(report)


def _print_upgrade(report: migrations.UpgradeReport) -> None:
    start = migrations.BASELINE if report.adopted else report.before
    if report.adopted:
        ok(
            "Adopted a database made before migrations, rows kept, "
            f"at revision {migrations.BASELINE}."
        )
    if start == report.after:
        if not report.adopted:
            ok(f"Schema already at revision {report.after}; nothing to do.")
    else:
        ok(f"Schema upgraded from {start or 'empty'} to revision {report.after}.")


def _print_init(report: Any) -> None:
    if report.schema is not None and report.schema.changed:
        _print_upgrade(report.schema)
    if report.policy_rows:
        ok(f"Database ready; default policy loaded ({report.policy_rows} rows).")
    else:
        ok("Database ready; policy table kept as it was.")
    if report.admin_email:
        click.echo(f"Admin account: {report.admin_email}")
    if report.admin_password:
        click.secho(f"Admin password (shown once): {report.admin_password}", fg="yellow")
    if getattr(report, "note", None):
        warn(f"warning: {report.note}")


# -- users ------------------------------------------------------------------------------


def _password(value: str | None) -> str:
    if value:
        return value
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            fail("no password given (use --password, a terminal prompt or standard input)")
        return line
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_cli.command("create")
@click.argument("email")
@click.option("--password", default=None, help="The password (prompted when omitted).")
@click.option(
    "--role", "roles", multiple=True, help="Role to give (repeatable); default role when omitted."
)
@click.option(
    "--force", is_flag=True, help="Even if it breaks a policy test (recorded in the audit log)."
)
def users_create(email: str, password: str | None, roles: tuple[str, ...], force: bool) -> None:
    """Create an active account."""
    with errors():
        user = users.create(
            email,
            _password(password),
            roles=list(roles) or None,
            actor=actor(),
            source="cli",
            force=force,
        )
    ok(f"Created {user.email} with roles: {', '.join(users.direct_roles(user.email))}.")


@users_cli.command("list")
def users_list() -> None:
    """List accounts with their state and direct roles."""
    rows = users.list_users()
    for user in rows:
        state = "active" if user.active else "inactive"
        click.echo(f"{user.email}\t{state}\t{','.join(users.direct_roles(user.email))}")
    click.echo(f"{len(rows)} account(s).")


@users_cli.command("activate")
@click.argument("email")
def users_activate(email: str) -> None:
    """Let an account log in again (an active account is left as it is: exit status 0)."""
    with errors():
        email = users.require(email).email
        changed = editing.set_active(email, True, editing.Who(actor(), "cli"))
    ok(f"Activated {email}." if changed else f"{email} is already active; nothing changed.")


@users_cli.command("deactivate")
@click.argument("email")
@click.option("--force", is_flag=True, help="Even if nobody could open the policy editor after it.")
def users_deactivate(email: str, force: bool) -> None:
    """Stop an account: its sessions end now and it is treated as anonymous.

    An inactive account is left as it is (exit status 0, no audit entry).
    """
    with errors():
        email = users.require(email).email
        changed = editing.set_active(email, False, editing.Who(actor(), "cli"), force=force)
    ok(
        f"Deactivated {email}; its sessions are ended."
        if changed
        else f"{email} is already inactive; nothing changed."
    )


@users_cli.command("set-password")
@click.argument("email")
@click.option("--password", default=None, help="The new password (prompted when omitted).")
def users_set_password(email: str, password: str | None) -> None:
    """Set a new password; every session of the account ends."""
    with errors():
        users.require(email)
        user = users.set_password(email, _password(password), actor=actor(), source="cli")
        mail.mailer().drain()  # the owner's notice, before the process ends
    ok(f"Password changed for {user.email}; its sessions are ended and its owner told.")


@users_cli.command("unthrottle")
@click.argument("email", required=False)
@click.option("--address", default=None, help="Clear a client address's counters instead.")
def users_unthrottle(email: str | None, address: str | None) -> None:
    """Clear the login delay of an account (EMAIL) or of a client address (audited)."""
    if (email is None) == (address is None):
        raise click.UsageError("give either EMAIL or --address ADDR")
    with errors():
        cleared = users.unthrottle(email=email, address=address, actor=actor(), source="cli")
    ok(f"Cleared {cleared} login counter(s) of {email or address}.")


@users_cli.command("invite")
@click.argument("email")
def users_invite(email: str) -> None:
    """Mail EMAIL an invitation link to register (and print it); audited."""
    with errors():
        url = users.invite(email, actor=actor(), source="cli")
        mail.mailer().drain()
    ok(f"Invited {email.strip().lower()}: {url}")


@users_cli.command("recover-admin")
@click.argument("email")
def users_recover_admin(email: str) -> None:
    """Make EMAIL an active, verified admin, whatever the policy editor says; audited.

    The way back for an operator who locked everyone out: creates the account (with a
    generated password, printed once) or reactivates it and gives it the admin role,
    past the lockout guard.
    """
    with errors():
        user, password = users.recover_admin(email, actor=actor())
    ok(f"{user.email} is an active admin again (audited as user.recover-admin).")
    if password:
        click.secho(f"Password (shown once): {password}", fg="yellow")


# -- roles ------------------------------------------------------------------------------


@roles_cli.command("list")
def roles_list() -> None:
    """List roles with their direct members."""
    view = views.view(users.engine().snapshot)  # members by role, not a scan per role
    names = users.known_roles()
    for role in names:
        members = sorted(r.values[0] for r in view.links_to(role))
        click.echo(f"{role}\t{', '.join(members)}")
    click.echo(f"{len(names)} role(s).")


@roles_cli.command("add")
@click.argument("subject")
@click.argument("role")
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@click.option("--force", is_flag=True, help=FORCE_HELP)
def roles_add(subject: str, role: str, dry_run: bool, force: bool) -> None:
    """Give a user (EMAIL, lower-case), a role or a token (token:NAME) a role.

    An email with no account yet is accepted, with a warning: the role applies once
    that address registers. Giving a role the subject already has changes nothing
    (exit status 0, no audit entry). With --dry-run: exit status 0 when the change
    would be saved, 1 when it would be refused.
    """
    with errors():
        users.engine().refresh()
        if dry_run:
            change = editing.assign_change(subject, role)
            if not change:
                ok(f"{subject} already has role {role}; nothing would change.")
                return
            warn_risks(change.add)
            _preview(change, force=force)
            return
        changed = editing.assign(subject, role, editing.Who(actor(), "cli"), force=force)
    if changed:
        warn_risks([Rule("g", (subject, role))])
    ok(
        f"{subject} now has role {role}."
        if changed
        else f"{subject} already has role {role}; nothing changed."
    )


@roles_cli.command("remove")
@click.argument("subject")
@click.argument("role")
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@click.option("--force", is_flag=True, help=FORCE_HELP)
def roles_remove(subject: str, role: str, dry_run: bool, force: bool) -> None:
    """Take a role away from a user (EMAIL, lower-case), a role or a token (token:NAME).

    Taking away a role the subject does not have changes nothing (exit status 0). With
    --dry-run: exit status 0 when the change would be saved, 1 when it would be refused.
    """
    with errors():
        users.engine().refresh()
        if dry_run:
            change = editing.unassign_change(params.subject(subject), role)
            if not change:
                ok(f"{subject} does not have role {role}; nothing would change.")
                return
            _preview(change, force=force)
            return
        who = editing.Who(actor(), "cli")
        changed = editing.unassign(params.subject(subject), role, who, force=force)
    ok(
        f"{subject} no longer has role {role}."
        if changed
        else f"{subject} did not have role {role}; nothing changed."
    )


# -- policy -----------------------------------------------------------------------------


@policy_cli.command("load")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--merge", is_flag=True, help="Add the file's missing rows, remove none (default).")
@click.option(
    "--replace",
    is_flag=True,
    help="Make the table's rules and role links equal to the file's; keep role assignments.",
)
@click.option(
    "--include-assignments",
    is_flag=True,
    help="With --replace: make role assignments (email and token:NAME members) equal too.",
)
@click.option(
    "--allow-empty",
    is_flag=True,
    help="With --replace: accept a file with no rows in scope (removes every one).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Run every check of a real load; print the diff, who would gain and lose access, "
    "the policy tests that would flip, or what would be refused.",
)
@click.option("--force", is_flag=True, help=FORCE_HELP)
def policy_load(
    file: Path,
    merge: bool,
    replace: bool,
    include_assignments: bool,
    allow_empty: bool,
    dry_run: bool,
    force: bool,
) -> None:
    """Validate a policy CSV, then apply it in one transaction.

    \b
    --merge (default)  add the file's rows the table lacks; remove nothing.
    --replace          make the rules (p rows) and role links (g rows whose member
                       is a role) equal to the file; role assignments (g rows whose
                       member is an email or token:NAME) are kept, and the file's
                       assignment rows left out, unless --include-assignments.

    A file with no rows (none in scope, for --replace) is refused unless --replace
    --allow-empty. Every bad line is reported, with its number, before anything is
    written. Exit status: 0 loaded (or, with --dry-run, the load would pass),
    1 invalid file or refused (by validation, a role cycle, the lockout guard or a
    policy test), 2 usage error, 3 the service cannot decide.
    """
    if merge and replace:
        raise click.UsageError("--merge and --replace exclude each other: choose one")
    for flag, given in (
        ("--include-assignments", include_assignments),
        ("--allow-empty", allow_empty),
    ):
        if given and not replace:
            raise click.UsageError(f"{flag} goes with --replace")
    engine = users.engine()
    with errors(), _empty_file(replace):
        policy = csvio.read_file(file, engine.model)
        if dry_run:
            _dry_run(engine, policy, replace, include_assignments, allow_empty, force)
            return
        planned, applied = loading.load(
            engine,
            policy,
            editing.Who(actor(), "cli"),
            replace=replace,
            assignments=include_assignments,
            allow_empty=allow_empty,
            force=force,
        )
    _left_out(planned)
    if (
        replace
        and applied.removed
        and not loading.select(policy.rules, engine.model, planned.parts)
    ):
        # --allow-empty emptied the scope: say what went.
        click.echo(csvio.describe(Change(remove=applied.removed)))
    warn_risks(applied.added, policy, limit=MAX_ANALYSED)
    ok(
        f"Loaded {file} ({planned.mode}): {len(applied.added)} added, "
        f"{len(applied.removed)} removed, revision {applied.revision}."
    )


@contextmanager
def _empty_file(replace: bool) -> Iterator[None]:
    """Say what ``--allow-empty`` would do when a file has no rows to load."""
    try:
        yield
    except loading.EmptyFile as e:
        if replace:
            hint = f"--replace --allow-empty would remove {len(e.would_remove)} row(s)"
        else:
            hint = "to remove every rule and role link: --replace --allow-empty"
        raise failure(f"{e.message} ({hint})", editing.EXIT_INVALID) from e


def _dry_run(
    engine: PolicyEngine,
    policy: csvio.PolicyFile,
    replace: bool,
    assignments: bool,
    allow_empty: bool,
    force: bool,
) -> None:
    """Print the diff of a load and run its checks; fail as the real load would."""
    engine.refresh()  # the checks decide on the policy: load it (the command starts without)
    planned = loading.plan(
        engine, policy, replace=replace, assignments=assignments, allow_empty=allow_empty
    )
    change = planned.change
    if change:
        click.echo(csvio.describe(change))
    _left_out(planned)
    warn_risks(change.add, policy)
    # Every check a real load runs, and its effect; bounded by authz.whatif's limits, so
    # a file of any size is compared in about a second.
    what = policy_tests.what_if(change, force=force)
    if what.changed:
        _echo_what_if(what, rows=False)
    if what.refused is not None:
        raise failure(
            f"dry run (nothing changed): the load would fail: {shown(what.refused)}",
            editing.EXIT_INVALID,
        )
    ok(
        f"Dry run: would add {len(change.add)} and remove {len(change.remove)} row(s)"
        f"{_forced_past(what)}; nothing changed."
    )


def _echo_what_if(what: WhatIf, *, rows: bool = True) -> None:
    """Print a what-if: the rows (unless printed already), the policy tests that flip, who
    gains and loses access. Its refusal is left to the command's error line."""
    lines = what.text()
    if not rows:  # from the first heading after the rows' count and (indented) rows on
        start = (at for at, line in enumerate(lines) if at and not line.startswith("  "))
        lines = lines[next(start, len(lines)) :]
    for line in lines:
        if not line.startswith("Refused: "):
            click.echo(shown(line))


def _forced_past(what: WhatIf) -> str:
    broken = sum(1 for flip in what.flips if flip.breaks)
    return f", forced past {broken} policy test(s)" if broken else ""


def _preview(change: Change, *, force: bool) -> None:
    """Print what a change would do and stop with exit status 1 if it would be refused;
    nothing is written, not even an audit entry."""
    what = policy_tests.what_if(change, force=force)
    _echo_what_if(what)
    if what.refused is not None:
        raise failure(f"dry run (nothing changed): {shown(what.refused)}", editing.EXIT_INVALID)
    ok(f"Dry run: the change would be saved{_forced_past(what)}; nothing changed.")


def _left_out(planned: loading.Plan) -> None:
    if planned.left_out:
        warn(
            f"note: {len(planned.left_out)} role assignment row(s) of the file left out "
            "(--replace keeps the table's assignments; see --include-assignments)"
        )


@policy_cli.command("add")
@click.argument("ptype")
@click.argument("values", nargs=-1, required=True)
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@click.option("--force", is_flag=True, help=FORCE_HELP)
def policy_add(ptype: str, values: tuple[str, ...], dry_run: bool, force: bool) -> None:
    """Add one row: PTYPE VALUE... (e.g. ``p user /reports/* GET allow``).

    With --dry-run: exit status 0 when the row would be saved, 1 when it would be refused.
    """
    engine = users.engine()
    with errors():
        rule = engine.validate([Rule(ptype, values)])[0]
        engine.refresh()
        if dry_run:
            if rule in engine.snapshot.ruleset:
                ok(f"The policy already has [{rule}]; nothing would change.")
                return
            warn_risks([rule])
            _preview(Change.adding(rule), force=force)
            return
        applied = engine.apply(
            Change.adding(rule), actor=actor(), source="cli", action="rule.add", force=force
        )
    warn_risks([rule])
    if applied.changed:
        ok(f"Added [{rule}], revision {applied.revision}.")
    else:
        ok(f"The policy already has [{rule}]; nothing changed.")


@policy_cli.command("export")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--rules-only",
    is_flag=True,
    help="Only rules (p rows) and role links (g rows whose member is a role).",
)
@click.option(
    "--assignments-only",
    is_flag=True,
    help="Only role assignments (g rows whose member is an email or token:NAME).",
)
def policy_export(file: Path | None, rules_only: bool, assignments_only: bool) -> None:
    """Write the policy as CSV (to FILE, or standard output): by default every row.

    The file loads back to the same rows (``policy load --replace
    --include-assignments`` for a full export; ``--replace`` for --rules-only).
    """
    if rules_only and assignments_only:
        raise click.UsageError("--rules-only and --assignments-only exclude each other")
    parts = loading.BOTH
    if rules_only:
        parts = frozenset({loading.Part.RULES})
    elif assignments_only:
        parts = frozenset({loading.Part.ASSIGNMENTS})
    engine = users.engine()
    if file is None:
        with errors():
            exported = loading.export(engine, sys.stdout, parts)
        _skipped(exported)
        return
    with _written_beside(file) as out, errors():
        exported = loading.export(engine, out, parts)
    _skipped(exported)
    ok(f"Exported {exported.rows} rows to {file}.")


@contextmanager
def _written_beside(file: Path) -> Iterator[TextIO]:
    """A new file beside ``file`` to write, renamed over it when the block ends without
    error: a failed export leaves no half file.

    The file beside is made afresh, never opened through whatever is at its name: a link
    planted there (in a folder others can write to) would have the export written through
    it, over the file it points to.
    """
    partial = file.with_name(f".{file.name}.partial")
    try:
        partial.unlink(missing_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(partial, flags, 0o666), "w", encoding="utf-8", newline="\n") as out:
            yield out
        partial.replace(file)
    except OSError as e:
        fail(f"cannot write {file}: {e.strerror}")
    finally:
        partial.unlink(missing_ok=True)


def _skipped(exported: loading.Exported) -> None:
    if exported.skipped:
        warn(
            f"warning: {exported.skipped} stored row(s) left out: not valid under the model "
            "(see /readyz or the log for which)"
        )


#: ``policy check`` exit statuses beyond 0 (allow).
CHECK_DENY, CHECK_ERROR = 1, 2


@policy_cli.command("check")
@click.argument("subject")
@click.argument("path")
@click.argument("method")
@click.option("--explain", is_flag=True, help="Name the rule that decided.")
@click.pass_context
def policy_check(ctx: click.Context, subject: str, path: str, method: str, explain: bool) -> None:
    """Decide a request as the middleware would: EMAIL or anonymous, PATH, METHOD.

    Prints allow or deny. Exit status: 0 allow, 1 deny, 2 error (bad input, the
    service cannot decide), so a script can branch on it. A configuration error stops
    every command before it runs, with status 3.
    """
    with errors(status=CHECK_ERROR):
        users.engine().refresh()
        tried = editing.try_request(subject, path, method)
    decision = tried.decision
    verdict = "allow" if decision.allowed else "deny"
    if tried.note:
        click.echo(f"note: {tried.note}")
    click.secho(
        decision.explain() if explain else verdict, fg="green" if decision.allowed else "red"
    )
    if not decision.allowed:
        ctx.exit(CHECK_DENY)


@policy_cli.command("test")
@click.option(
    "--file",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Test this policy CSV (before loading it) instead of the stored policy.",
)
@click.option(
    "--tests",
    "tests_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Run the policy tests of this CSV instead of the stored ones.",
)
@click.option("-v", "--verbose", is_flag=True, help="Print the tests that pass too.")
def policy_test(policy_file: Path | None, tests_file: Path | None, verbose: bool) -> None:
    """Run every policy test on the policy; print each failure with the rule that decided.

    With both --file and --tests the database is not opened at all: CI runs the tests a
    deployment ships on the policy it ships. Exit status: 0 every test passes, 1 one
    fails (a stored test that does not read counts as failing) or a file is invalid
    (every bad line named), 2 usage error, 3 the service cannot decide (the database
    cannot be read, or the stored policy is refused).
    """
    engine = users.engine()
    with errors():
        bad: list[tuple[str, PolicyFileError]] = []
        snapshot = items = None
        if policy_file is not None:
            try:
                snapshot = policy_tests.policy_file_snapshot(policy_file)
            except PolicyFileError as e:
                bad.append(("--file", e))
        if tests_file is not None:
            try:
                items = expectations.read_file(tests_file).expectations
            except PolicyFileError as e:
                bad.append(("--tests", e))
        if bad:
            fail("\n".join(f"{flag} {e}" for flag, e in bad))
        unread: list[str] = []
        if items is None:
            items = tuple(engine.expectations())
            unread = policy_tests.unreadable()
        if snapshot is None:
            engine.refresh()  # the command starts without the stored policy: load it
            snapshot = engine.snapshot
        results = policy_tests.run(snapshot, items)
    for result in results:
        if not result.passed:
            click.secho(shown(str(result)), fg="red")
        elif verbose:
            click.secho(shown(str(result)), fg="green")
    for line in unread:
        click.secho(f"FAIL: {shown(line)}: remove it with `tests remove ID`", fg="red")
    passed = sum(1 for r in results if r.passed)
    failed = len(results) - passed + len(unread)
    if not results and not unread:
        warn("note: there are no policy tests to run (see `tests add` and `tests load`)")
    if snapshot.refused is not None:
        # Requests get 503 until it is fixed: not a failing promise, an undecidable policy.
        raise failure(
            f"{passed} passed, {failed} failed: the stored policy is refused "
            f"({shown(snapshot.refused)})",
            editing.EXIT_UNAVAILABLE,
        )
    if failed:
        fail(f"{passed} passed, {failed} failed")
    ok(f"{passed} passed, 0 failed")


# -- tokens -----------------------------------------------------------------------------


def _when(moment: Any) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment is not None else "-"


@tokens_cli.command("create")
@click.argument("name")
@click.option("--role", "roles", multiple=True, help="Role to give the token (repeatable).")
@click.option(
    "--expires",
    "days",
    type=int,
    default=None,
    help=f"Days until it expires (1 to {tokens.MAX_DAYS}); never when omitted.",
)
@click.option(
    "--force", is_flag=True, help="Even if it breaks a policy test (recorded in the audit log)."
)
def tokens_create(name: str, roles: tuple[str, ...], days: int | None, force: bool) -> None:
    """Create a token; print its secret once (the last line of standard output).

    The secret is stored nowhere: only its keyed hash is kept, so it cannot be shown again.
    """
    with errors():
        token, secret = tokens.create(
            name, roles=list(roles), expires_days=days, actor=actor(), source="cli", force=force
        )
    given = ", ".join(tokens.roles_of(token.name)) or "none"
    expiry = f", expires {_when(token.expires_at)} UTC" if token.expires_at else ""
    click.secho(f"Created {token.subject} with roles: {given}{expiry}.", fg="green", err=True)
    warn(
        "warning: store the secret now; it is not shown again (revoke and create another "
        "if it is lost)."
    )
    click.echo(secret)


@tokens_cli.command("list")
def tokens_list() -> None:
    """List tokens: name, state, roles, created, expires, last used, hint (never secrets)."""
    rows = tokens.list_tokens()
    click.echo("name\tstate\troles\tcreated\texpires\tlast used\thint")
    for token in rows:
        fields = (
            token.name,
            tokens.state(token),
            ",".join(tokens.roles_of(token.name)) or "-",
            f"{_when(token.created_at)} by {token.created_by or '-'}",
            _when(token.expires_at),
            _when(token.last_used_at),
            f"{token.hint}...",
        )
        click.echo("\t".join(fields))
    click.echo(f"{len(rows)} token(s).")


@tokens_cli.command("revoke")
@click.argument("name")
def tokens_revoke(name: str) -> None:
    """Revoke a token now, on every instance, and remove its role assignments."""
    with errors():
        token = tokens.revoke(name, actor=actor(), source="cli")
    ok(f"Revoked {token.subject}; its requests are refused from now on.")


# -- tests ------------------------------------------------------------------------------


def _who() -> editing.Who:
    return editing.Who(actor(), "cli")


def _result_line(result: Result) -> None:
    """Print one policy test with its id, whether it passes and what decides it."""
    text = f"{result.expectation.id}\t{shown(str(result))}"
    click.secho(text, fg=None if result.passed else "red")


@tests_cli.command("list")
@click.option("--failing", is_flag=True, help="Only the tests the policy does not keep.")
def tests_list(failing: bool) -> None:
    """List the stored policy tests: id, pass or FAIL, the promise, what decides it now."""
    with errors():
        users.engine().refresh()
        page = policy_tests.listing(failing=failing, per_page=expectations.MAX_EXPECTATIONS)
    for result in page.results:
        _result_line(result)
    for line in page.bad:
        click.secho(f"FAIL: {shown(line)} (remove it with `tests remove ID`)", fg="red")
    failed = page.failing + len(page.bad)
    if failing:
        click.echo(f"{failed} policy test(s) failing.")
    else:
        click.echo(f"{page.total + len(page.bad)} policy test(s), {failed} failing.")


@tests_cli.command("add")
@click.argument("subject")
@click.argument("method")
@click.argument("path")
@click.argument("outcome", metavar="allow|deny")
@click.option("--note", default="", help="Why the promise is made (shown with failures).")
@click.option(
    "--force",
    is_flag=True,
    help="Store it even if the policy does not keep it now (recorded in the audit log).",
)
def tests_add(subject: str, method: str, path: str, outcome: str, note: str, force: bool) -> None:
    """Promise that SUBJECT may (allow) or may not (deny) METHOD PATH.

    SUBJECT is an email (lower-case), a role, anonymous or token:NAME; METHOD is upper
    case (HEAD is decided as GET). Every later change to the policy must keep the
    promise. A test the policy does not keep now is refused (each failing test printed
    with the rule that decides it) unless --force. A test for a request that has one
    already replaces it.
    """
    with errors():
        item = policy_tests.parse(subject, method, path, outcome, note)
        previous = {e.id: e for e in policy_tests.stored()}.get(item.id)
        added = policy_tests.add(item, _who(), force=force)
        result = policy_tests.run(items=[item])[0]
    if not added:
        ok(f"Policy test {item.id} is stored already: {shown(str(item))}; nothing changed.")
        return
    if not result.passed:
        warn(f"warning: stored although the policy does not keep it (forced): {shown(str(result))}")
    if previous is not None:
        ok(f"Replaced policy test {item.id}: {shown(str(previous))} -> {shown(str(item))}.")
    else:
        ok(f"Added policy test {item.id}: {shown(str(item))}.")


@tests_cli.command("remove")
@click.argument("target", nargs=-1, required=True, metavar="ID | SUBJECT METHOD PATH")
def tests_remove(target: tuple[str, ...]) -> None:
    """Remove a policy test, named by its id (see `tests list`) or by its request."""
    if len(target) not in (1, 3):
        raise click.UsageError("give a policy test's ID, or its SUBJECT METHOD PATH")
    if len(target) == 1:
        test_id, named = target[0], f"id {target[0]!r}"
    else:
        test_id = Expectation(target[0], target[1], target[2], "deny").id
        named = " ".join(target)
    with errors():
        try:
            item = policy_tests.remove(test_id, _who())
        except editing.Missing as e:
            raise editing.Missing(f"no policy test with {named} (see `tests list`)") from e
    ok(f"Removed policy test {item.id}: {shown(str(item))}.")


@tests_cli.command("load")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Also remove the stored tests the file lacks.")
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Let --replace with a file holding no test remove every stored test.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Say what would be added and removed and which would fail; write nothing.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Store them even if the policy does not keep some now (recorded in the audit log).",
)
def tests_load(file: Path, replace: bool, allow_empty: bool, dry_run: bool, force: bool) -> None:
    """Store the policy tests of a CSV file (subject, method, path, allow|deny[, note]).

    The file is read whole first: every bad line is named and nothing is stored. A test
    for a request that has one already replaces it; --replace also removes the stored
    tests the file does not hold. Tests the policy does not keep now are refused (each
    printed with the rule that decides it) unless --force. Exit status: 0 loaded (or,
    with --dry-run, the load would pass), 1 invalid file or refused, 3 the service
    cannot decide.
    """
    with errors():
        items = expectations.read_file(file).expectations
        if dry_run:
            _tests_dry_run(items, replace=replace, allow_empty=allow_empty, force=force)
            return
        added, removed = policy_tests.load(
            items, _who(), replace=replace, force=force, allow_empty=allow_empty
        )
        failing = policy_tests.failing(added)
    for result in failing:
        warn(f"warning: stored although the policy does not keep it (forced): {shown(str(result))}")
    if not (added or removed):
        ok(f"The stored policy tests already hold {file}; nothing changed.")
        return
    ok(f"Loaded {file}: {len(added)} added, {len(removed)} removed.")


def _noted(item: Expectation) -> str:
    return shown(f"{item} ({item.note})" if item.note else str(item))


def _tests_dry_run(
    items: Sequence[Expectation], *, replace: bool, allow_empty: bool, force: bool
) -> None:
    """Print what loading ``items`` would add and remove, and which would be refused."""
    try:
        added, removed = policy_tests.plan(items, replace=replace, allow_empty=allow_empty)
    except (RuleError, editing.EditError) as e:
        fail(f"dry run (nothing changed): the load would be refused: {e}")
    for item in removed:
        click.echo(f"- {_noted(item)}")
    for item in added:
        click.echo(f"+ {_noted(item)}")
    users.engine().refresh()
    failing = policy_tests.failing(added)
    for result in failing:
        click.secho(f"  {shown(str(result))}", fg="red", err=True)
    if failing and not force:
        fail(
            f"dry run (nothing changed): the load would be refused: the policy does not "
            f"keep {len(failing)} of these policy test(s) (listed above)"
        )
    forced = f", forced past {len(failing)} failing" if failing else ""
    ok(
        f"Dry run: would add {len(added)} and remove {len(removed)} policy test(s){forced}; "
        "nothing changed."
    )


@tests_cli.command("export")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def tests_export(file: Path | None) -> None:
    """Write the stored policy tests as CSV (to FILE, or standard output); `tests load
    --replace` reads it back to the same tests."""
    with errors():
        text = policy_tests.export()
        unread = policy_tests.unreadable()
    if unread:
        warn(f"warning: {len(unread)} stored policy test(s) left out: they do not read")
    if file is None:
        click.echo(text, nl=False)
        return
    with _written_beside(file) as out:
        out.write(text)
    count = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    ok(f"Exported {count} policy test(s) to {file}.")


# -- wiring -----------------------------------------------------------------------------


#: The command groups, on the app (``flask --app service``) and on the ``authz`` script.
GROUPS = (db_cli, users_cli, roles_cli, policy_cli, tokens_cli, tests_cli)


def register(app: Flask) -> None:
    """Add the command groups to an app."""
    for group in GROUPS:
        app.cli.add_command(group)


@click.command("serve", cls=FriendlyCommand)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option(
    "--production",
    is_flag=True,
    help="Serve with gunicorn and service/gunicorn_conf.py (AUTHZ_WORKERS workers).",
)
@with_appcontext
def serve(host: str, port: int, production: bool) -> None:
    """Initialise the database if needed and run the service."""
    with errors():
        report = init_database(create_admin=True, actor=actor())
    _print_init(report)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if not production:
        click.echo(f"Serving on http://{host}:{port}/ (development server; see --production).")
        from werkzeug.serving import run_simple

        run_simple(host, port, app, threaded=True)
        return
    workers = app.config["AUTHZ"].workers
    click.echo(f"Serving on http://{host}:{port}/ with gunicorn, {workers} workers.")
    from service import stop_background

    stop_background(app)  # gunicorn's workers build their own apps
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf"]
    argv += ["--bind", f"{host}:{port}", "service:create_app()"]
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter, fixed arguments


def _create_app() -> Flask:
    from service import create_app

    root = click.get_current_context().find_root()
    if root.invoked_subcommand != "serve":
        # Commands print their own one-line result; the server's start-up log lines
        # (a policy not loaded yet, a listener reconnecting) are not theirs to show.
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        root.call_on_close(lambda: logging.disable(previous))
    # An export streams the stored rows, and a load plans on them, without a snapshot:
    # loading the whole policy up front (and following its changes) would cost seconds
    # and memory that grow with the policy. A load builds one when it writes.
    here = click.get_current_context()
    parent = here.parent.info_name if here.parent is not None else None
    # The same for the policy tests: `policy test` reads the stored policy only when no
    # --file names one (with --file and --tests it opens no database at all).
    lazy = (parent, here.info_name) in (
        ("policy", "export"),
        ("policy", "load"),
        ("policy", "test"),
        ("tests", "export"),
    )
    return create_app(load_policy=not lazy)  # a configuration error: one line, status 3


class _Script(FlaskGroup):
    """The ``authz`` script. Its commands are fixed, so ``--help`` never builds the app
    (which would create the instance folder and connect to the database)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return click.Group.list_commands(self, ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return click.Group.get_command(self, ctx, name)


cli = _Script(
    create_app=_create_app,
    add_default_commands=False,
    help="The authorization service: serve, db, users, roles, policy, tests, tokens.",
    epilog=EXIT_STATUSES,
)
for _command in (*GROUPS, serve):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``authz`` console script."""
    cli.main(prog_name="authz")
