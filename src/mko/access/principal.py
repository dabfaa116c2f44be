"""Who is asking (a user, a token, the CLI) and what their role allows."""

from __future__ import annotations

from dataclasses import dataclass

from mko.platform.db.models.access import Role

__all__ = ["Principal", "allows"]


_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (web or token of a user) or a named token, with its role."""

    name: str
    role: Role
    kind: str  # "user", "token", "session"
    user_id: int | None = None
    csrf_token: str | None = None
    token_id: int | None = None  # the API token it authenticated with (kind "token")

    @property
    def actor_name(self) -> str:
        """How operations record this caller."""
        return f"{self.kind}:{self.name}"


def allows(role: Role, required: Role) -> bool:
    """Whether ``role`` may do what ``required`` allows (agents only what agents may)."""
    if Role.AGENT in (required, role):
        return role in (required, Role.ADMIN) and required == Role.AGENT
    return _RANK[role] >= _RANK[required]
