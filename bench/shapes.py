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


SHAPES = {
    "small": Shape("small", 100, 1_000),
    "medium": Shape("medium", 1_000, 10_000),
    "large": Shape("large", 10_000, 100_000),
    "large-explicit": Shape("large-explicit", 10_000, 100_000, per_role=10),
}
