"""Every classic Casbin example model, ours against plain Casbin: the same answer, the same row.

``tests/data/models/examples`` holds our own version of each kind of model PyCasbin ships
examples for (basic, root, ACL without users or resources, RBAC, resource roles, domains,
deny, not-deny, priorities, keyMatch1-5, regex, glob, IP, attribute rules, conditional
role links), each with a policy of our own in ``NAME.csv``.

For each: the rows pass the write path's validation, a snapshot decides with whatever the
engine picks (index or fallback), and a plain ``casbin.Enforcer(model.conf, policy.csv)``
(Casbin's own file adapter and ``load_policy``) decides the same requests. Requests hit
every row, miss them, walk role chains, and come from strangers; both the decision and
the explaining row must be equal, and an exception must be matched by an exception.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import casbin
import pytest

from authz.errors import RuleError
from authz.model import PolicyModel
from authz.rules import Rule
from authz.rules import validate
from authz.snapshot import Snapshot

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "models" / "examples"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.conf"))
STRANGERS = ("ghost@example.com", "root", "anonymous", "", "192.168.2.7", "10.0.0.1")
ACTIONS = ("read", "write", "GET", "POST", "DELETE", "PUT", "HEAD", "get", "GETX")
#: Pattern parts replaced by concrete values to make requests that hit a row.
_PARAM = re.compile(r":[A-Za-z]\w*|\{[^/}]*\}|\[0-9\]\+|\.\*|\*\*|\*|\?")


def read_rows(name: str) -> list[Rule]:
    """The example policy, one row a line, split as Casbin's file adapter splits it."""
    rows = []
    for line in (EXAMPLES / f"{name}.csv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            ptype, *values = (v.strip() for v in line.split(","))
            rows.append(Rule(ptype, tuple(values)))
    return rows


def answer(call: Any, request: tuple[str, str, str]) -> tuple[Any, ...]:
    """(allowed, explaining values) or ("raised",): an exception is an answer too."""
    try:
        allowed, explain = call(request)
    except Exception:  # noqa: BLE001 - both sides must raise, whatever the type
        return ("raised",)
    return (bool(allowed), list(explain))


def ours(snapshot: Snapshot) -> Any:
    def call(request: tuple[str, str, str]) -> tuple[bool, list[str]]:
        allowed, rule = snapshot.decider.decide(request)
        return allowed, list(rule.values) if rule is not None else []

    return call


def theirs(enforcer: casbin.Enforcer) -> Any:
    return lambda request: enforcer.enforce_ex(*request)


def instantiate(rng: random.Random, value: str) -> str:
    """A concrete value a pattern row may match (or nearly match)."""
    value = value.removeprefix("^").removesuffix("$")
    return _PARAM.sub(lambda _m: rng.choice(("1", "42", "x", "a/b", "", "doc.md")), value)


def vocabulary(rows: list[Rule], model: PolicyModel, rng: random.Random) -> list[list[str]]:
    """Values for each request field: the rows' own, instances of patterns, and strangers."""
    request = model.request
    fields = model.policies["p"]
    members = [r.values[0] for r in rows if r.ptype in model.roles]
    roles = [r.values[1] for r in rows if r.ptype in model.roles and len(r.values) > 1]
    pools: list[list[str]] = []
    for position, name in enumerate(request):
        pool = [*STRANGERS, *members, *roles]
        same = [r.values[fields.index(name)] for r in rows if r.ptype == "p" and name in fields]
        pool += same + [instantiate(rng, v) for v in same for _ in range(3)]
        if position == 2:
            pool += list(ACTIONS)
        pool += [v + "\n" for v in same[:2]] + ["/api/books/1/", "/files", "/docs/a/b.md"]
        pools.append(sorted(set(pool)))
    return pools


def requests_for(rows: list[Rule], model: PolicyModel, count: int) -> list[tuple[str, str, str]]:
    rng = random.Random(f"requests-{model.text}")
    pools = vocabulary(rows, model, rng)
    found: list[tuple[str, str, str]] = []
    # Every p row, asked for exactly as written (after the names its fields hold).
    fields = model.policies["p"]
    for rule in rows:
        if rule.ptype == "p":
            named = dict(zip(fields, rule.values, strict=False))
            request = [named.get(n, rng.choice(pools[i])) for i, n in enumerate(model.request)]
            found.append((request[0], instantiate(rng, request[1]), request[2]))
            # The same row asked for by every member of a role link (chains, resource groups).
            for link in rows:
                if link.ptype in model.roles:
                    found.append((link.values[0], request[1], request[2]))
                    found.append((request[0], link.values[0], request[2]))
    while len(found) < count:
        found.append((rng.choice(pools[0]), rng.choice(pools[1]), rng.choice(pools[2])))
    return found


@pytest.mark.parametrize("name", NAMES)
def test_example_model_decides_as_casbin(name: str, tmp_path: Path) -> None:
    """The engine accepts the model and its rows, and answers every request as Casbin."""
    text = (EXAMPLES / f"{name}.conf").read_text(encoding="utf-8")
    model = PolicyModel.from_text(text, source=name)
    rows = read_rows(name)
    assert [validate(r, model) for r in rows] == rows  # rows the write path accepts
    snapshot = Snapshot.of(1, rows, model)
    enforcer = casbin.Enforcer(str(EXAMPLES / f"{name}.conf"), str(EXAMPLES / f"{name}.csv"))
    requests = requests_for(rows, model, 700)
    mine, reference = ours(snapshot), theirs(enforcer)
    differ = []
    outcomes = set()
    for request in requests:
        a, b = answer(mine, request), answer(reference, request)
        outcomes.add(a[0])
        if a != b:
            differ.append(f"{request!r}: ours {a!r} ({snapshot.kind}), casbin {b!r}")
    assert not differ, f"{name}: {len(differ)} of {len(requests)} differ:\n" + "\n".join(differ[:8])
    # The requests exercise both outcomes (where the model can deny at all).
    assert True in outcomes and (False in outcomes or name == "rbac_not_deny")


def test_conditional_role_links_are_inherited() -> None:
    """``g, ann, data-admin, _, _``: ann holds what data-admin holds (issue 7)."""
    name = "rbac_conditional"
    model = PolicyModel.from_file(EXAMPLES / f"{name}.conf")
    snapshot = Snapshot.of(1, read_rows(name), model)
    assert snapshot.kind == "casbin"
    assert snapshot.decide("ann@example.com", "invoices", "read").allowed
    assert snapshot.decide("bob@example.com", "invoices", "write").allowed  # viewer -> admin
    assert not snapshot.decide("carol@example.com", "invoices", "read").allowed


def test_models_the_index_compiles_and_those_it_does_not_say_why() -> None:
    """Fallbacks expose their reason on the snapshot, for the admin page."""
    kinds = {}
    for name in NAMES:
        model = PolicyModel.from_file(EXAMPLES / f"{name}.conf")
        snapshot = Snapshot.of(1, read_rows(name), model)
        kinds[name] = snapshot.kind
        if snapshot.kind == "index":
            assert snapshot.decider_reason is None
        else:
            assert snapshot.decider_reason, name
    assert kinds["globmatch"] == kinds["keymatch2"] == kinds["rbac_deny"] == "index"
    assert kinds["ipmatch"] == "casbin"
    ip = Snapshot.of(1, read_rows("ipmatch"), PolicyModel.from_file(EXAMPLES / "ipmatch.conf"))
    assert "ipMatch" in (ip.decider_reason or "")


@pytest.mark.parametrize("pattern", ["/docs/*", "/docs/**", "/a/*.md", "/drafts/?", "*"])
def test_glob_patterns_can_be_written(pattern: str) -> None:
    """A globMatch path is a path, not a subject ("globMatch" starts with "g", like g)."""
    model = PolicyModel.from_file(EXAMPLES / "globmatch.conf")
    assert validate(Rule.of("p", "reader", pattern, "GET"), model).values[1] == pattern


def test_glob_subject_still_checked() -> None:
    model = PolicyModel.from_file(EXAMPLES / "globmatch.conf")
    with pytest.raises(RuleError, match="sub: "):
        validate(Rule.of("p", "Not A Role", "/docs/*", "GET"), model)
    with pytest.raises(RuleError, match="must start with '/'"):
        validate(Rule.of("p", "reader", "docs/*", "GET"), model)


@pytest.mark.parametrize("value", ["192.168.2.0/24", "10.0.0.1", "2001:db8::/32", "10.1.2.3/8"])
def test_ip_patterns_casbin_reads_are_accepted(value: str) -> None:
    model = PolicyModel.from_file(EXAMPLES / "ipmatch.conf")
    validate(Rule.of("p", value, "invoices", "read"), model)


@pytest.mark.parametrize("value", ["192.168.2.0/33", "10.0.0", "localhost", "300.1.1.1", "::g"])
def test_ip_patterns_that_never_match_are_refused(value: str) -> None:
    """Casbin would compare such a pattern as text with an address: it never matches."""
    model = PolicyModel.from_file(EXAMPLES / "ipmatch.conf")
    with pytest.raises(RuleError, match="not an IP address or CIDR network"):
        validate(Rule.of("p", value, "invoices", "read"), model)
