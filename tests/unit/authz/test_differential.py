"""The compiled decision index against Casbin itself: the same answer and the same explaining row.

Every test builds a ``casbin.Enforcer`` from the same model text and rows (the reference),
asks it ``enforce_ex`` and asks the snapshot's decider ``decide``, and requires both the
allow/deny boolean and the explaining row to be equal. An exception is an answer too: both
must raise, or neither.

Policies and requests come from seeded generators (``random.Random(seed)``) and from
hypothesis (derandomized), so every run compares the same cases.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import NamedTuple

import casbin
import pytest
from casbin.persist.adapters import FileAdapter
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from authz.errors import ModelError
from authz.errors import RuleError
from authz.model import PolicyModel
from authz.rules import Rule
from authz.rules import validate
from authz.snapshot import Snapshot

REPO = Path(__file__).resolve().parents[3]
MODELS = REPO / "tests" / "data" / "models"
SHIPPED_TEXT = (REPO / "model.conf").read_text(encoding="utf-8")
SHIPPED = PolicyModel.from_text(SHIPPED_TEXT, source="model.conf")

#: Casbin's default role manager follows this many levels, the subject being the first.
CASBIN_MAX_LEVEL = 10

#: Requests compared per test, summed over the module (printed at the end with ``-s``).
COMPARED: dict[str, int] = {}

Request = tuple[Any, ...]
Answer = tuple[Any, ...]


# -- the reference and the comparison -----------------------------------------------------


def reference(model_text: str, rules: Iterable[Rule]) -> casbin.Enforcer:
    """A Casbin enforcer of the model text holding the rows, in order."""
    enforcer = casbin.Enforcer(casbin.Enforcer.new_model(text=model_text))
    cmodel = enforcer.get_model()
    for rule in rules:
        sec = "g" if rule.ptype.startswith("g") else "p"
        cmodel.add_policy(sec, rule.ptype, list(rule.values))
    enforcer.build_role_links()
    return enforcer


class RowsAdapter(casbin.persist.Adapter):
    """A read-only adapter over rows in memory: Casbin loads them as from any store."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)

    def load_policy(self, model: Any) -> None:
        for rule in self.rules:
            sec = "g" if rule.ptype.startswith("g") else "p"
            model.model[sec][rule.ptype].policy.append(list(rule.values))


def loaded_reference(model_text: str, rules: Iterable[Rule]) -> casbin.Enforcer:
    """A Casbin enforcer that loads the rows through an adapter (``load_policy``).

    Loading, unlike ``Model.add_policy``, sorts rows for the priority effects.
    """
    return casbin.Enforcer(casbin.Enforcer.new_model(text=model_text), RowsAdapter(rules))


def casbin_answer(enforcer: casbin.Enforcer, request: Request) -> Answer:
    """``enforce_ex`` as (allowed, explaining values), or ("raised", error type)."""
    try:
        allowed, explain = enforcer.enforce_ex(*request)
    except Exception as e:  # an answer too: the index must then fail as well
        return ("raised", type(e).__name__)
    return (allowed, list(explain))


def index_answer(snapshot: Snapshot, request: Request) -> Answer:
    """The snapshot decider's answer in the shape of ``casbin_answer``."""
    try:
        allowed, rule = snapshot.decider.decide(request)
    except Exception as e:
        return ("raised", type(e).__name__)
    return (allowed, list(rule.values) if rule is not None else [])


def same(ours: Answer, theirs: Answer) -> bool:
    """Equal answers; a raise matches a raise of any type (the engine turns both into 503)."""
    if ours[0] == "raised" or theirs[0] == "raised":
        return ours[0] == theirs[0]
    return type(ours[0]) is bool and ours == theirs


def compare(
    snapshot: Snapshot,
    enforcer: casbin.Enforcer,
    requests: Iterable[Request],
    *,
    label: str,
) -> int:
    """Assert the snapshot answers every request as the enforcer does; return how many."""
    bad: list[str] = []
    count = 0
    for request in requests:
        count += 1
        ours = index_answer(snapshot, request)
        theirs = casbin_answer(enforcer, request)
        if not same(ours, theirs):
            bad.append(f"  request={request!r}\n    index ={ours!r}\n    casbin={theirs!r}")
    COMPARED[label] = COMPARED.get(label, 0) + count
    assert not bad, (
        f"{label}: {len(bad)} of {count} requests differ ({snapshot.decider.kind} decider);"
        " first ones:\n" + "\n".join(bad[:5])
    )
    return count


@pytest.fixture(scope="module", autouse=True)
def report_totals() -> Iterable[None]:
    """Print how many requests the module compared (visible with ``pytest -s``)."""
    yield
    total = sum(COMPARED.values())
    print(f"\ndifferential: {total} requests compared: {dict(sorted(COMPARED.items()))}")


def load_model(name: str) -> tuple[str, PolicyModel]:
    text = (MODELS / name).read_text(encoding="utf-8")
    return text, PolicyModel.from_text(text, source=name)


def is_valid(rule: Rule, model: PolicyModel) -> bool:
    try:
        validate(rule, model)
    except RuleError:
        return False
    return True


# -- generators -------------------------------------------------------------------------

ROLE_ALPHABET = (
    "admin",
    "user",
    "anonymous",
    "editor",
    "viewer",
    "ops",
    "audit",
    "dev-team",
    "r_2",
    "support",
)
USERS = tuple(f"u{i}@example.com" for i in range(8))
SEGMENTS = ("a", "b", "c", "api", "v1", "items", "x-y", "f.json", "7", "42")
METHOD_PATTERNS = (
    "GET",
    "POST",
    "GET|POST",
    ".*",
    "P.*",
    "(GET|HEAD)",
    "DELETE",
    "HEAD",
    "PUT|PATCH",
    "GET$",
)
METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")
ODD_METHODS = ("GETX", "get", "XGET", "", "POSTGET", "GET\n", "Get")
EXACT_METHODS = ("GET", "POST", "DELETE", "HEAD", "PUT")

#: Object patterns per matching function, for the models in tests/data/models.
OBJECT_PATTERNS: dict[str, Callable[[random.Random], str]] = {}


def _segments(rng: random.Random, low: int = 1, high: int = 3) -> list[str]:
    return [rng.choice(SEGMENTS) for _ in range(rng.randint(low, high))]


def _literal(rng: random.Random) -> str:
    return "/" + "/".join(_segments(rng))


def key_match2_pattern(rng: random.Random) -> str:
    """A keyMatch2 pattern: literals, ":param", "*", and patterns with "." or "-"."""
    segs = _segments(rng)
    base = "/" + "/".join(segs)
    return rng.choice(
        (
            base,
            base,
            "/",
            base + "/:id",
            f"/{segs[0]}/:id/{rng.choice(SEGMENTS)}",
            base + "/*",
            "*",
            "/*",
            "/:name",
            "/api/:ver/items/:id",
            f"/{segs[0]}/file.txt",
            "/a.b/:id",
            "/x-y/:id",
            "/x-y",
            f"/{segs[0]}/:id.json",
        )
    )


def key_match_pattern(rng: random.Random) -> str:
    base = _literal(rng)
    return rng.choice((base, base, base + "/*", base + "*", "*", "/", "/a/b*", "/x-y/*"))


def key_match3_pattern(rng: random.Random) -> str:
    base = _literal(rng)
    return rng.choice(
        (base, base, base + "/{id}", "/a/{id}/b", base + "/*", "/files/{name}.txt", "/x-y/{id}")
    )


def regex_object_pattern(rng: random.Random) -> str:
    return rng.choice(
        (_literal(rng), "^/a/.*", "/a/[0-9]+$", "/a", "/(a|b)/c$", ".*", "/x-y", "/f.json", "/$")
    )


def glob_pattern(rng: random.Random) -> str:
    base = _literal(rng)
    return rng.choice(
        (base, base, base + "/*", base + "/**", "/a/*.json", "/a/?", "*", "/**", "/x-y/*")
    )


OBJECT_PATTERNS.update(
    {
        "eq": _literal,
        "keyMatch2": key_match2_pattern,
        "keyMatch": key_match_pattern,
        "keyMatch3": key_match3_pattern,
        "regexMatch": regex_object_pattern,
        "globMatch": glob_pattern,
    }
)
ACTION_PATTERNS: dict[str, Callable[[random.Random], str]] = {
    "eq": lambda rng: rng.choice(EXACT_METHODS),
    "regexMatch": lambda rng: rng.choice(METHOD_PATTERNS),
}

_PARAM = re.compile(r":[^/]+|\{[^/]+\}|\[0-9\]\+|\(a\|b\)|\.\*|\*\*|\*|\?")


def instantiate(rng: random.Random, pattern: str) -> str:
    """A concrete path that a pattern may well match (or nearly match)."""
    if pattern == "*":
        return _literal(rng)

    def fill(_match: re.Match[str]) -> str:
        return rng.choice(("1", "12", "z", "a", "b/c", "", "x.json"))

    path = _PARAM.sub(fill, pattern).replace("^", "").replace("$", "")
    if "." in path and rng.random() < 0.3:
        path = path.replace(".", "X", 1)  # "." in a keyMatch2 pattern is a regex dot
    return path


def vary(rng: random.Random, path: str) -> str:
    """Occasionally damage a path: trailing newline or slash, doubled slash, case, empty."""
    roll = rng.random()
    if roll < 0.10:
        return path + "\n"
    if roll < 0.14:
        return path + "/"
    if roll < 0.16:
        return ""
    if roll < 0.18:
        return path.replace("/", "//", 1)
    if roll < 0.20:
        return path.upper()
    if roll < 0.21:
        return path + "\n\n"
    return path


class Policy(NamedTuple):
    """Generated rows and the names requests should draw on."""

    rules: list[Rule]
    roles: list[str]
    users: list[str]
    chain: list[str]
    cycle: list[str]


def shipped_policy(rng: random.Random, size: int = 120) -> Policy:
    """Rows for the shipped model: chains over 10 levels, cycles, users, allow and deny."""
    roles = rng.sample(ROLE_ALPHABET, k=rng.randint(5, len(ROLE_ALPHABET)))
    chain = [f"c{i}" for i in range(rng.randint(11, 15))]
    cycle = [f"k{i}" for i in range(rng.randint(2, 4))]
    users = list(USERS[: rng.randint(4, len(USERS))])
    g: list[Rule] = []
    g += [Rule.of("g", chain[i], chain[i + 1]) for i in range(len(chain) - 1)]
    g += [Rule.of("g", cycle[i], cycle[(i + 1) % len(cycle)]) for i in range(len(cycle))]
    for _ in range(rng.randint(5, 10)):
        member, role = rng.sample([*roles, *cycle], 2)
        g.append(Rule.of("g", member, role))
    g.append(Rule.of("g", rng.choice(roles), chain[0]))
    for user in users:
        for role in rng.sample([*roles, *chain[:4], *cycle], k=rng.randint(1, 3)):
            g.append(Rule.of("g", user, role))
    p: list[Rule] = []
    while len(g) + len(p) < size:
        roll = rng.random()
        if roll < 0.65:
            sub = rng.choice(roles)
        elif roll < 0.80:
            sub = rng.choice(users)
        elif roll < 0.92:
            sub = rng.choice(chain[7:])  # around Casbin's 10-level limit
        else:
            sub = rng.choice(cycle)
        eft = "deny" if rng.random() < 0.25 else "allow"
        rule = Rule.of("p", sub, key_match2_pattern(rng), rng.choice(METHOD_PATTERNS), eft)
        p.append(rule)
        if rng.random() < 0.03:
            p.append(rule)  # a duplicate: both sides keep the first
    rules = g + p
    rng.shuffle(rules)
    return Policy(rules, roles, users, chain, cycle)


def subject_for(rng: random.Random, policy: Policy) -> str:
    roll = rng.random()
    if roll < 0.30:
        return rng.choice(policy.users)
    if roll < 0.55:
        return rng.choice(ROLE_ALPHABET)
    if roll < 0.72 and (policy.chain or policy.cycle):
        return rng.choice(policy.chain + policy.cycle)
    if roll < 0.90:
        return rng.choice(("ghost@example.com", "nobody", f"n{rng.randrange(10**6)}@x.io"))
    if roll < 0.95:
        return ""
    return "anonymous"


def object_for(rng: random.Random, patterns: Sequence[str]) -> str:
    roll = rng.random()
    if roll < 0.55 and patterns:
        path = instantiate(rng, rng.choice(patterns))
    elif roll < 0.65 and patterns:
        path = rng.choice(patterns)  # the pattern text itself
    else:
        path = "/" + "/".join(_segments(rng, 0, 4))
    return vary(rng, path)


def action_for(rng: random.Random) -> str:
    return rng.choice(ODD_METHODS) if rng.random() < 0.2 else rng.choice(METHODS)


def requests_for(
    rng: random.Random, policy: Policy, count: int, *, obj_field: int = 1
) -> list[Request]:
    patterns = sorted({r.values[obj_field] for r in policy.rules if r.ptype == "p"})
    return [
        (subject_for(rng, policy), object_for(rng, patterns), action_for(rng)) for _ in range(count)
    ]


# -- 1. the shipped model, seeded random policies -----------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_shipped_model_random_policies(seed: int) -> None:
    """Thousands of requests against a 120-row policy agree with Casbin, explanation included."""
    rng = random.Random(seed)
    policy = shipped_policy(rng)
    snapshot = Snapshot.of(1, policy.rules, SHIPPED)
    assert snapshot.decider.kind == "index"
    enforcer = reference(SHIPPED_TEXT, policy.rules)
    requests = requests_for(rng, policy, 3000)
    compare(snapshot, enforcer, requests, label="shipped")
    allowed = sum(snapshot.decider.decide(r)[0] for r in requests)
    explained = sum(snapshot.decider.decide(r)[1] is not None for r in requests)
    # The generator must exercise both outcomes and rows that explain them.
    assert 0.05 * len(requests) < allowed < 0.95 * len(requests)
    assert explained > 0.1 * len(requests)


@pytest.mark.parametrize("depth", range(CASBIN_MAX_LEVEL - 3, CASBIN_MAX_LEVEL + 4))
def test_shipped_model_hierarchy_limit(depth: int) -> None:
    """A role ``depth`` links up is held only within Casbin's 10 levels, as Casbin says."""
    chain = [f"c{i}" for i in range(depth + 1)]
    rules = [Rule.of("g", chain[i], chain[i + 1]) for i in range(depth)]
    rules += [
        Rule.of("p", chain[-1], "/top/:id", "GET", "allow"),
        Rule.of("p", chain[-1], "/top/secret", "GET", "deny"),
        Rule.of("g", "ann@example.com", chain[0]),
    ]
    snapshot = Snapshot.of(1, rules, SHIPPED)
    enforcer = reference(SHIPPED_TEXT, rules)
    requests = [
        (who, path, "GET")
        for who in [*chain, "ann@example.com"]
        for path in ("/top/1", "/top/secret", "/top/1\n")
    ]
    compare(snapshot, enforcer, requests, label="hierarchy")
    # The subject is level 1: c0 holds c9 (10 levels) but not c10.
    assert snapshot.decider.decide(("c0", "/top/1", "GET"))[0] is (depth < CASBIN_MAX_LEVEL)


def test_shipped_model_cycle_and_trailing_newline() -> None:
    """Cycles terminate; "^/a/b$" also matches "/a/b\\n", for literals and patterns alike."""
    rules = [
        Rule.of("g", "x", "y"),
        Rule.of("g", "y", "z"),
        Rule.of("g", "z", "x"),
        Rule.of("g", "bob@example.com", "y"),
        Rule.of("p", "x", "/a/b", "GET", "allow"),
        Rule.of("p", "z", "/a/:id", "GET|POST", "allow"),
        Rule.of("p", "y", "/a/b", "POST", "deny"),
        Rule.of("p", "x", "/x-y/f.json", "(GET|HEAD)", "allow"),
    ]
    snapshot = Snapshot.of(1, rules, SHIPPED)
    enforcer = reference(SHIPPED_TEXT, rules)
    requests = [
        (sub, obj, act)
        for sub in ("x", "y", "z", "bob@example.com", "w")
        for obj in (
            "/a/b",
            "/a/b\n",
            "/a/b\n\n",
            "/a/c\n",
            "/x-y/f.json",
            "/x-y/fXjson",
            "/x-y/f.json\n",
        )
        for act in ("GET", "POST", "GETX", "HEAD", "get")
    ]
    compare(snapshot, enforcer, requests, label="edge")
    assert snapshot.decider.decide(("bob@example.com", "/a/b\n", "GET"))[0] is True


# -- 2. hypothesis: small generated policies for the shipped model ------------------------

_H_SUBJECTS = ("admin", "user", "anonymous", "ed", "u1@example.com", "u2@example.com")
_H_ROLES = ("admin", "user", "anonymous", "ed")
_H_PATH_PARTS = ("a", "b", ":id", "*", "x-y", "f.json", "1", "")
_path_patterns = st.one_of(
    st.lists(st.sampled_from(_H_PATH_PARTS), min_size=0, max_size=3).map(
        lambda p: "/" + "/".join(p)
    ),
    st.text(alphabet="/ab1:*.-", max_size=7).map(lambda s: "/" + s),
    st.just("*"),
)
_method_patterns = st.one_of(
    st.sampled_from(METHOD_PATTERNS), st.text(alphabet="GETPOS|.*()", min_size=1, max_size=6)
)
_p_rows = st.builds(
    lambda sub, obj, act, eft: Rule.of("p", sub, obj, act, eft),
    st.sampled_from(_H_SUBJECTS),
    _path_patterns,
    _method_patterns,
    st.sampled_from(("allow", "allow", "deny")),
)
_g_rows = st.builds(
    lambda member, role: Rule.of("g", member, role),
    st.sampled_from(_H_SUBJECTS),
    st.sampled_from(_H_ROLES),
)
_policies = st.lists(st.one_of(_p_rows, _p_rows, _g_rows), max_size=14).map(
    lambda rows: [r for r in rows if is_valid(r, SHIPPED)]
)
_request_paths = st.one_of(
    st.lists(st.sampled_from(("a", "b", "1", "x-y", "f.json", "fXjson", "")), max_size=4).map(
        lambda p: "/" + "/".join(p)
    ),
    st.text(alphabet="/ab1.-X\n", max_size=7).map(lambda s: "/" + s),
)
_requests = st.lists(
    st.tuples(
        st.sampled_from((*_H_SUBJECTS, "ghost@example.com", "")),
        _request_paths,
        st.sampled_from((*METHODS, *ODD_METHODS)),
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(rules=_policies, requests=_requests)
def test_shipped_model_hypothesis(rules: list[Rule], requests: list[Request]) -> None:
    """Small valid policies and odd requests: the index answers exactly as Casbin."""
    snapshot = Snapshot.of(1, rules, SHIPPED)
    if any(r.ptype == "p" for r in rules):
        assert snapshot.decider.kind == "index"
    compare(snapshot, reference(SHIPPED_TEXT, rules), requests, label="hypothesis")


# -- 3. other models the index compiles ----------------------------------------------------


class Spec(NamedTuple):
    """A model file and how to generate rows for it."""

    file: str
    sub: str  # how subjects are compared: "g", "eq" or "regexMatch"
    obj: str  # the function comparing objects
    act: str  # the function comparing actions
    #: the row's fields in model order, named as here (whatever the model calls them)
    fields: tuple[str, ...] = ("sub", "obj", "act", "eft")


COMPILED = (
    Spec("acl.conf", sub="eq", obj="eq", act="eq", fields=("sub", "obj", "act")),
    Spec("rbac_equal.conf", sub="g", obj="eq", act="eq"),
    Spec("rbac_keymatch.conf", sub="g", obj="keyMatch", act="regexMatch"),
    Spec("rbac_regex_object.conf", sub="g", obj="regexMatch", act="eq"),
    Spec("rbac_deny_override.conf", sub="g", obj="keyMatch2", act="regexMatch"),
    Spec("acl_allow_and_deny.conf", sub="eq", obj="keyMatch2", act="regexMatch"),
    Spec("rbac_reordered.conf", sub="g", obj="keyMatch2", act="eq"),
    Spec("rbac_keymatch3.conf", sub="g", obj="keyMatch3", act="regexMatch"),
    Spec("rbac_keymatch3_first.conf", sub="g", obj="keyMatch3", act="regexMatch"),
    Spec("rbac_glob.conf", sub="g", obj="globMatch", act="eq"),
    Spec("regex_subject.conf", sub="regexMatch", obj="keyMatch2", act="regexMatch"),
    Spec(
        "rbac_renamed_fields.conf",
        sub="g",
        obj="keyMatch2",
        act="regexMatch",
        fields=("eft", "obj", "sub", "act"),
    ),
)
SUBJECT_PATTERNS = (
    "u[0-9]@example.com",
    ".*",
    "admin",
    r"u1@example\.com",
    "(admin|ops)",
    "^u",
    "[a-z]+$",
    "editor",
)


def spec_policy(rng: random.Random, spec: Spec, size: int = 110) -> Policy:
    """Rows for a model of ``spec``: roles with a long chain and a cycle when it has g."""
    roles = rng.sample(ROLE_ALPHABET, k=6)
    users = list(USERS[:6])
    has_roles = spec.sub == "g"
    chain = [f"c{i}" for i in range(12)] if has_roles else []
    cycle = ["k0", "k1", "k2"] if has_roles else []
    rules: list[Rule] = []
    if has_roles:
        rules += [Rule.of("g", chain[i], chain[i + 1]) for i in range(len(chain) - 1)]
        rules += [Rule.of("g", cycle[i], cycle[(i + 1) % 3]) for i in range(3)]
        for user in users:
            for role in rng.sample([*roles, chain[0], cycle[0]], k=rng.randint(1, 3)):
                rules.append(Rule.of("g", user, role))
        for _ in range(5):
            member, role = rng.sample(roles, 2)
            rules.append(Rule.of("g", member, role))
    subjects = [*roles, *users, *chain[8:], *cycle]
    while len(rules) < size:
        if spec.sub == "regexMatch" and rng.random() < 0.6:
            sub = rng.choice(SUBJECT_PATTERNS)
        else:
            sub = rng.choice(subjects)
        roll = rng.random()
        # Mostly allow and deny; now and then an effect Casbin counts as neither.
        eft = "deny" if roll < 0.3 else rng.choice(("Allow", "maybe")) if roll < 0.33 else "allow"
        named = {
            "sub": sub,
            "obj": OBJECT_PATTERNS[spec.obj](rng),
            "act": ACTION_PATTERNS[spec.act](rng),
            "eft": eft,
        }
        rules.append(Rule("p", tuple(named[f] for f in spec.fields)))
    rng.shuffle(rules)
    return Policy(rules, roles, users, chain, cycle)


@pytest.mark.parametrize("spec", COMPILED, ids=lambda s: s.file.removesuffix(".conf"))
def test_compiled_models_agree_with_casbin(spec: Spec) -> None:
    """Each (sub, obj, act) model the index compiles answers exactly as Casbin on it."""
    text, model = load_model(spec.file)
    total = 0
    for seed in range(2):
        rng = random.Random(f"{spec.file}-{seed}")
        policy = spec_policy(rng, spec)
        snapshot = Snapshot.of(1, policy.rules, model)
        assert snapshot.decider.kind == "index", spec.file
        total += compare(
            snapshot,
            reference(text, policy.rules),
            requests_for(rng, policy, 600, obj_field=spec.fields.index("obj")),
            label=spec.file,
        )
    assert total == 1200


# -- 4. models the index must not compile: Casbin decides, with the same answers ------------


def test_priority_effect_falls_back_to_casbin() -> None:
    """``priority(p.eft) || deny`` is not compiled; the fallback answers as Casbin."""
    text, model = load_model("fallback_priority.conf")
    rng = random.Random("priority")
    base = shipped_policy(rng, size=100)
    rules = [
        Rule("p", (str(rng.randrange(10)), *r.values)) if r.ptype == "p" else r for r in base.rules
    ]
    snapshot = Snapshot.of(1, rules, model)
    assert snapshot.decider.kind == "casbin"
    policy = base._replace(rules=rules)
    compare(
        snapshot,
        loaded_reference(text, rules),
        requests_for(rng, policy, 400, obj_field=2),
        label="fallback_priority",
    )


def test_subject_priority_effect_falls_back_to_casbin() -> None:
    """``subjectPriority(p.eft) || deny`` is not compiled; the fallback answers as Casbin."""
    text, model = load_model("fallback_subject_priority.conf")
    rng = random.Random("subject-priority")
    roles = list(ROLE_ALPHABET)
    # A role tree without cycles (Casbin refuses to rank subjects in a cycle).
    rules = [Rule.of("g", roles[i], rng.choice(roles[:i])) for i in range(1, len(roles))]
    rules += [Rule.of("g", u, rng.choice(roles)) for u in USERS]
    while len(rules) < 100:
        sub = rng.choice([*roles, *USERS])
        eft = "deny" if rng.random() < 0.4 else "allow"
        obj = key_match2_pattern(rng)
        rules.append(Rule.of("p", sub, obj, rng.choice(METHOD_PATTERNS), eft))
    snapshot = Snapshot.of(1, rules, model)
    assert snapshot.decider.kind == "casbin"
    policy = Policy(rules, roles, list(USERS), [], [])
    compare(
        snapshot,
        loaded_reference(text, rules),
        requests_for(rng, policy, 400),
        label="fallback_subject_priority",
    )


def test_priority_fallback_orders_rows_as_casbin_loading_them(tmp_path: Path) -> None:
    """A priority model decides by priority, as an enforcer loading the same rows does.

    Casbin sorts rows by ``priority`` when it loads a policy (``load_policy``), not in
    ``Model.add_policy``; a decider that only adds rows decides in insertion order.
    """
    text, model = load_model("fallback_priority.conf")
    rules = [
        Rule.of("p", "10", "alice@example.com", "/x", "GET", "allow"),
        Rule.of("p", "1", "alice@example.com", "/x", "GET", "deny"),
        Rule.of("p", "5", "ops", "/y/:id", ".*", "allow"),
        Rule.of("p", "2", "ops", "/y/2", "GET", "deny"),
        Rule.of("g", "alice@example.com", "ops"),
    ]
    (tmp_path / "model.conf").write_text(text, encoding="utf-8")
    (tmp_path / "policy.csv").write_text(
        "".join(", ".join(r.as_list()) + "\n" for r in rules), encoding="utf-8"
    )
    loaded = casbin.Enforcer(
        str(tmp_path / "model.conf"), FileAdapter(str(tmp_path / "policy.csv"))
    )
    snapshot = Snapshot.of(1, rules, model)
    requests = [("alice@example.com", "/x", "GET"), ("alice@example.com", "/y/2", "GET")]
    assert casbin_answer(loaded, requests[0]) == (False, list(rules[1].values))
    compare(snapshot, loaded, requests, label="fallback_priority_loaded")


def test_or_matcher_falls_back_to_casbin() -> None:
    """A matcher with ``||`` is not a plain conjunction; Casbin decides."""
    text, model = load_model("fallback_or.conf")
    rng = random.Random("or")
    policy = shipped_policy(rng, size=100)
    snapshot = Snapshot.of(1, policy.rules, model)
    assert snapshot.decider.kind == "casbin"
    compare(
        snapshot, reference(text, policy.rules), requests_for(rng, policy, 400), label="fallback_or"
    )


class Resource(NamedTuple):
    """An ABAC request object: the matcher reads ``r.obj.Path``."""

    Path: str
    Owner: str


def test_abac_matcher_falls_back_to_casbin() -> None:
    """A matcher reading ``r.obj.Path`` is not compiled; Casbin decides on the objects."""
    text = (MODELS / "fallback_abac.conf").read_text(encoding="utf-8")
    try:
        model = PolicyModel.from_text(text)
    except ModelError as e:  # pragma: no cover - only if PolicyModel refuses ABAC outright
        pytest.skip(f"PolicyModel rejects an ABAC matcher: {e}")
    rng = random.Random("abac")
    policy = shipped_policy(rng, size=100)
    snapshot = Snapshot.of(1, policy.rules, model)
    assert snapshot.decider.kind == "casbin"
    requests = [
        (sub, Resource(obj, rng.choice(policy.users)), act)
        for sub, obj, act in requests_for(rng, policy, 400)
    ]
    compare(snapshot, reference(text, policy.rules), requests, label="fallback_abac")


def test_domain_rbac_falls_back_to_casbin() -> None:
    """``g = _, _, _`` (roles per domain) is not compiled; Casbin decides."""
    text, model = load_model("fallback_domains.conf")
    rng = random.Random("domains")
    domains = ("d1", "d2", "d3")
    roles = list(ROLE_ALPHABET[:5])
    rules = [Rule.of("g", u, rng.choice(roles), rng.choice(domains)) for u in USERS for _ in "ab"]
    rules += [
        Rule.of("g", a, b, rng.choice(domains)) for a, b in zip(roles, roles[1:], strict=False)
    ]
    while len(rules) < 90:
        sub = rng.choice([*roles, *USERS])
        eft = "deny" if rng.random() < 0.25 else "allow"
        rules.append(Rule.of("p", sub, rng.choice(domains), rng.choice(METHOD_PATTERNS), eft))
    snapshot = Snapshot.of(1, rules, model)
    assert snapshot.decider.kind == "casbin"
    requests = [
        (
            rng.choice([*USERS, *roles, "ghost@example.com"]),
            rng.choice((*domains, "d9")),
            action_for(rng),
        )
        for _ in range(400)
    ]
    compare(snapshot, reference(text, rules), requests, label="fallback_domains")


# -- where a row cannot be evaluated: both must fail, or neither ----------------------------


def test_keymatch3_unevaluable_row_after_deciding_deny() -> None:
    """Casbin stops at the first deny row, so it never evaluates a later broken row."""
    text, model = load_model("rbac_keymatch3.conf")
    rules = [
        Rule.of("p", "alice@example.com", "/x", "GET", "deny"),
        Rule.of("p", "alice@example.com", "/a/(", "GET", "allow"),
    ]
    assert not is_valid(rules[1], model)  # refused at write time; stored, it still decides
    snapshot = Snapshot.of(1, rules, model)
    assert snapshot.decider.kind == "casbin"  # a row the index cannot evaluate: Casbin decides
    compare(
        snapshot,
        reference(text, rules),
        [("alice@example.com", "/x", "GET")],
        label="unevaluable",
    )


def test_keymatch3_first_unevaluable_row_of_another_subject() -> None:
    """With keyMatch3 before g, Casbin evaluates every row's pattern, other subjects' too."""
    text, model = load_model("rbac_keymatch3_first.conf")
    rules = [
        Rule.of("p", "bob@example.com", "/a/(", "GET", "allow"),
        Rule.of("p", "alice@example.com", "/x", "GET", "allow"),
    ]
    assert not is_valid(rules[0], model)  # refused at write time; stored, it still decides
    snapshot = Snapshot.of(1, rules, model)
    assert snapshot.decider.kind == "casbin"  # a row the index cannot evaluate: Casbin decides
    compare(
        snapshot,
        reference(text, rules),
        [("alice@example.com", "/x", "GET")],
        label="unevaluable",
    )


def test_shipped_model_uncompilable_regex_after_deny() -> None:
    """A stored row whose regex does not compile, after a deny row that decides first."""
    rules = [
        Rule.of("p", "alice@example.com", "/x", "GET", "deny"),
        Rule.of("p", "alice@example.com", "/x", "(", "allow"),
    ]
    snapshot = Snapshot.of(1, rules, SHIPPED)
    assert snapshot.decider.kind == "casbin"  # a row the index cannot evaluate: Casbin decides
    compare(
        snapshot,
        reference(SHIPPED_TEXT, rules),
        [("alice@example.com", "/x", "GET")],
        label="unevaluable",
    )


# -- 5. incremental changes ---------------------------------------------------------------


def random_change(
    rng: random.Random, snapshot: Snapshot, policy: Policy, removed: list[Rule]
) -> tuple[list[Rule], list[Rule]]:
    """A small change: some rows removed (g and deny rows among them), some added."""
    rules = list(snapshot.rules)
    remove = rng.sample(rules, k=min(len(rules), rng.randint(1, 6)))
    g_rows = [r for r in rules if r.ptype == "g"]
    deny_rows = [r for r in rules if r.ptype == "p" and r.values[3] == "deny"]
    if g_rows:
        remove.append(rng.choice(g_rows))
    if deny_rows:
        remove.append(rng.choice(deny_rows))
    add: list[Rule] = []
    for _ in range(rng.randint(1, 6)):
        roll = rng.random()
        names = [*policy.roles, *policy.chain, *policy.cycle]
        if roll < 0.3:
            member = rng.choice([*policy.users, *names])
            add.append(Rule.of("g", member, rng.choice(names)))
        elif roll < 0.5 and removed:
            add.append(rng.choice(removed))  # back again, now last in policy order
        else:
            sub = rng.choice([*names, *policy.users])
            eft = "deny" if rng.random() < 0.4 else "allow"
            add.append(Rule.of("p", sub, key_match2_pattern(rng), rng.choice(METHOD_PATTERNS), eft))
    if rng.random() < 0.2 and add:
        remove.append(add[0])  # added and removed in one change
    # Each row named once, as PolicyEngine passes them (a repeat is tested on its own).
    return list(dict.fromkeys(add)), list(dict.fromkeys(remove))


@pytest.fixture(params=["shared", "compacting"])
def overlays(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Snapshots share rows and links through overlays, compacted once they grow: run the
    incremental tests with the usual thresholds, and with tiny ones that compact often."""
    if request.param == "compacting":
        import authz.index
        import authz.rows

        monkeypatch.setattr(authz.rows, "MIN_OVERLAY", 2)
        monkeypatch.setattr(authz.rows, "SHARE", 1_000_000)
        monkeypatch.setattr(authz.index, "LINK_OVERLAY_MIN", 2)
        monkeypatch.setattr(authz.index, "LINK_OVERLAY_SHARE", 1_000_000)
    return str(request.param)


@pytest.mark.parametrize("seed", range(3))
def test_incremental_changes_match_casbin_from_scratch(seed: int, overlays: str) -> None:
    """After each with_changes the snapshot answers as Casbin and Snapshot.of on its rows."""
    rng = random.Random(1000 + seed)
    policy = shipped_policy(rng, size=110)
    first = Snapshot.of(1, policy.rules, SHIPPED)
    first_requests = requests_for(rng, policy, 250)
    first_answers = [index_answer(first, r) for r in first_requests]
    snapshot = first
    assert first.roles  # counted once here, then carried along by each change
    removed: list[Rule] = []
    for revision in range(2, 10):
        add, remove = random_change(rng, snapshot, policy, removed)
        before = snapshot.rules
        snapshot = snapshot.with_changes(revision, add, remove)
        removed += [r for r in remove if r in before]
        expected = [r for r in before if r not in remove]
        expected += [r for r in dict.fromkeys(add) if r not in expected]
        assert list(snapshot.rules) == expected  # policy order: re-added rows come last
        assert snapshot.decider.kind == "index"
        requests = requests_for(rng, policy._replace(rules=list(snapshot.rules)), 250)
        compare(snapshot, reference(SHIPPED_TEXT, snapshot.rules), requests, label="incremental")
        rebuilt = Snapshot.of(revision, snapshot.rules, SHIPPED)
        assert snapshot.roles == rebuilt.roles  # the role names, kept change by change
        differ = [r for r in requests if index_answer(snapshot, r) != index_answer(rebuilt, r)]
        assert not differ, f"with_changes and Snapshot.of differ on {differ[:3]!r}"
    # The first snapshot is untouched by everything built from it.
    assert [index_answer(first, r) for r in first_requests] == first_answers
    compare(first, reference(SHIPPED_TEXT, first.rules), first_requests, label="incremental")


@pytest.mark.parametrize(
    "spec", [COMPILED[0], COMPILED[-1]], ids=lambda s: s.file.removesuffix(".conf")
)
def test_incremental_changes_on_other_models(spec: Spec, overlays: str) -> None:
    """with_changes on models keyed by equality, or with the row fields reordered."""
    text, model = load_model(spec.file)
    rng = random.Random(f"incremental-{spec.file}")
    policy = spec_policy(rng, spec, size=80)
    pool = spec_policy(random.Random(f"pool-{spec.file}"), spec, size=80).rules
    snapshot = Snapshot.of(1, policy.rules, model)
    obj_field = spec.fields.index("obj")
    for revision in range(2, 8):
        current = list(snapshot.rules)
        remove = rng.sample(current, k=rng.randint(1, 8))
        add = rng.sample(pool, k=rng.randint(1, 8)) + rng.sample(remove, k=1)
        snapshot = snapshot.with_changes(revision, list(dict.fromkeys(add)), remove)
        assert snapshot.decider.kind == "index"
        grown = policy._replace(rules=list(snapshot.rules))
        requests = requests_for(rng, grown, 200, obj_field=obj_field)
        compare(snapshot, reference(text, snapshot.rules), requests, label="incremental")


def test_incremental_change_naming_a_row_twice(overlays: str) -> None:
    """A row named twice in one change is removed (or added) once, as if named once."""
    rules = [
        Rule.of("g", "ann@example.com", "ops"),
        Rule.of("p", "ops", "/a/:id", "GET", "allow"),
        Rule.of("p", "ops", "/a/1", "GET", "deny"),
    ]
    snapshot = Snapshot.of(1, rules, SHIPPED)
    twice = snapshot.with_changes(2, [rules[2], rules[2]], [rules[0], rules[0], rules[2]])
    once = snapshot.with_changes(2, [rules[2]], [rules[0], rules[2]])
    assert twice.rules == once.rules == (rules[1], rules[2])
    requests = [(s, "/a/1", "GET") for s in ("ann@example.com", "ops")]
    compare(twice, reference(SHIPPED_TEXT, once.rules), requests, label="incremental")


def test_incremental_through_an_empty_policy(overlays: str) -> None:
    """Removing every p row hands over to Casbin; adding rows back compiles the index again."""
    rng = random.Random("empty")
    policy = shipped_policy(rng, size=60)
    snapshot = Snapshot.of(1, policy.rules, SHIPPED)
    p_rows = [r for r in snapshot.rules if r.ptype == "p"]
    empty = snapshot.with_changes(2, [], p_rows)
    assert empty.decider.kind == "casbin"
    requests = requests_for(rng, policy, 200)
    compare(empty, reference(SHIPPED_TEXT, empty.rules), requests, label="incremental")
    back = empty.with_changes(3, list(reversed(p_rows)), [])
    assert back.decider.kind == "index"
    compare(back, reference(SHIPPED_TEXT, back.rules), requests, label="incremental")


# -- 6. unknown subjects are not remembered -------------------------------------------------


def caches(index: object) -> dict[str, dict[Any, Any] | set[Any] | list[Any]]:
    """Every mutable container the index holds in its attributes."""
    return {k: v for k, v in vars(index).items() if isinstance(v, dict | set | list)}


def test_unknown_subjects_do_not_grow_the_index() -> None:
    """Deciding for 20,000 never-seen subjects leaves the closure cache as it was."""
    rng = random.Random("unknown")
    policy = shipped_policy(rng)
    snapshot = Snapshot.of(1, policy.rules, SHIPPED)
    assert snapshot.decider.kind == "index"
    index = snapshot.decider.index  # type: ignore[attr-defined]
    known = [*policy.users, *ROLE_ALPHABET, *policy.chain, *policy.cycle]
    for sub in known:
        snapshot.decider.decide((sub, "/a/b", "GET"))
    size = len(index._closures)
    cache_sizes = {k: len(v) for k, v in caches(index).items()}
    assert size > 0  # roles are remembered, so the check below can see growth
    seen = set(known)
    for i in range(20_000):
        sub = rng.choice((f"visitor{i}@example.com", f"role{i}", f"x-{rng.randrange(10**9)}"))
        assert sub not in seen
        snapshot.decider.decide((sub, rng.choice(("/a/b", "/a/1", "/x-y")), "GET"))
    assert len(index._closures) == size
    assert set(index._closures) <= set(known)
    # Nor any other cache the index keeps.
    assert {k: len(v) for k, v in caches(index).items()} == cache_sizes
