"""The standard Casbin RBAC benchmark shapes, as rows for the shipped model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from authz.rules import Rule


@dataclass(frozen=True)
class Shape:
    """roles x users, each role granted one resource (or ``per_role`` explicit rows)."""

    name: str
    roles: int
    users: int
    per_role: int = 1

    def rows(self) -> Iterator[Rule]:
        """p rows per role, then one g row per user (user i has role i // (users/roles))."""
        for r in range(self.roles):
            if self.per_role == 1:
                yield Rule("p", (f"group{r}", f"/data/{r // 10}/*", "GET", "allow"))
            else:
                for j in range(self.per_role):
                    yield Rule("p", (f"group{r}", f"/data/{r}/item{j}", "GET|POST", "allow"))
        ratio = self.users // self.roles
        for u in range(self.users):
            yield Rule("g", (f"user{u}@example.com", f"group{u // ratio}"))

    def allowed_request(self, u: int) -> tuple[str, str, str]:
        """A request the policy allows for user ``u``."""
        role = u // (self.users // self.roles)
        if self.per_role == 1:
            return (f"user{u}@example.com", f"/data/{role // 10}/doc", "GET")
        return (f"user{u}@example.com", f"/data/{role}/item{u % self.per_role}", "GET")

    def denied_request(self, u: int) -> tuple[str, str, str]:
        """A request the policy denies for user ``u`` (another role's resource)."""
        role = (u // (self.users // self.roles) + self.roles // 2) % self.roles
        if self.per_role == 1:
            return (f"user{u}@example.com", f"/data/{role // 10 + 100000}/doc", "GET")
        return (f"user{u}@example.com", f"/data/{role}/item{u % self.per_role}", "GET")


@dataclass(frozen=True)
class Huge:
    """A deployment of 100,000 users holding ten rows each: 1,001,000 rows.

    Each user ``user{u}@example.com`` has nine ``p`` rows of their own, on paths no one
    else has (900,000 distinct path patterns), and one ``g`` row into one of 1,000 teams;
    each team has one ``p`` row. Of a user's nine rows, five are literal paths
    (``/users/{u}/docs/{j}``, GET|POST), two are prefixes (``/users/{u}/projects/{j}/*``,
    GET) and two take a parameter (``/users/{u}/files/{j}/:name``, GET). Team ``t`` may
    GET ``/teams/{t}/*``.
    """

    name: str = "huge"
    users: int = 100_000
    teams: int = 1_000

    def rows(self) -> Iterator[Rule]:
        """Team rows first, then each user's nine p rows and one g row."""
        for t in range(self.teams):
            yield Rule("p", (f"team{t}", f"/teams/{t}/*", "GET", "allow"))
        for u in range(self.users):
            email = f"user{u}@example.com"
            for j in range(5):
                yield Rule("p", (email, f"/users/{u}/docs/{j}", "GET|POST", "allow"))
            for j in range(5, 7):
                yield Rule("p", (email, f"/users/{u}/projects/{j}/*", "GET", "allow"))
            for j in range(7, 9):
                yield Rule("p", (email, f"/users/{u}/files/{j}/:name", "GET", "allow"))
            yield Rule("g", (email, f"team{u % self.teams}"))

    def allowed_request(self, u: int) -> tuple[str, str, str]:
        """A request the policy allows for user ``u`` (a literal, prefix, parameter or
        team row, in turn)."""
        email = f"user{u}@example.com"
        kind = u % 4
        if kind == 0:
            return (email, f"/users/{u}/docs/{u % 5}", "GET")
        if kind == 1:
            return (email, f"/users/{u}/projects/{5 + u % 2}/a/b", "GET")
        if kind == 2:
            return (email, f"/users/{u}/files/{7 + u % 2}/report.pdf", "GET")
        return (email, f"/teams/{u % self.teams}/board", "GET")

    def denied_request(self, u: int) -> tuple[str, str, str]:
        """A request the policy denies for user ``u`` (another user's or team's path)."""
        other = (u + self.users // 2) % self.users
        email = f"user{u}@example.com"
        if u % 2:
            return (email, f"/users/{other}/docs/{u % 5}", "GET")
        return (email, f"/teams/{(u + self.teams // 2) % self.teams}/board", "GET")


SHAPES: dict[str, Shape | Huge] = {
    "small": Shape("small", 100, 1_000),
    "medium": Shape("medium", 1_000, 10_000),
    "large": Shape("large", 10_000, 100_000),
    "large-explicit": Shape("large-explicit", 10_000, 100_000, per_role=10),
    "huge": Huge(),
}
