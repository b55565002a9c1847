"""Who is acting, and what their role allows: admin ⊃ support ⊃ viewer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from orderflow.errors import DomainError


class Role(StrEnum):
    VIEWER = "viewer"  # reads everything an order shows, the dead letters, dependency health
    SUPPORT = "support"  # + investigations, dispute bundles, redrive and fix non-payment work
    ADMIN = "admin"  # everything: orders, catalogue, cancellations, payment work, approvals


RANK = {Role.VIEWER: 0, Role.SUPPORT: 1, Role.ADMIN: 2}


class Forbidden(DomainError):
    """Authenticated, but the role (or the four-eyes rule) does not allow this action."""

    status_code = 403
    code = "forbidden"


@dataclass(frozen=True)
class Principal:
    """The one acting: a named user (`user:alice`), the bootstrap token, or the CLI."""

    actor: str  # what the history records
    role: Role
    user_id: int | None = None  # set for a named person

    @property
    def is_person(self) -> bool:
        return self.user_id is not None

    def can(self, role: Role) -> bool:
        return RANK[self.role] >= RANK[role]

    def require(self, role: Role, doing: str = "do this") -> None:
        if not self.can(role):
            raise Forbidden(f"the {self.role} role may not {doing} (it needs {role})")


BOOTSTRAP = Principal(actor="admin:api", role=Role.ADMIN)


def user_actor(name: str) -> str:
    return f"user:{name}"
