"""Who is calling: a plain value every domain can take without importing `identity`.

A `Principal` is a signed-in user or an API key, acting in one organization with one role and a
set of scopes. Services check it with `require_role` / `require_scope`; what it may touch is
limited to `principal.org_id` through `core.tenancy`.
"""

from dataclasses import dataclass, field
from typing import Literal

from atelier.core.errors import Forbidden

Role = Literal["viewer", "member", "admin", "owner"]
ApiScope = Literal["read", "write", "admin"]

ROLES: tuple[Role, ...] = ("viewer", "member", "admin", "owner")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
# The role an API key acts with is the highest its scopes allow.
SCOPE_ROLE: dict[str, Role] = {"read": "viewer", "write": "member", "admin": "admin"}
ROLE_SCOPES: dict[Role, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "member": frozenset({"read", "write"}),
    "admin": frozenset({"read", "write", "admin"}),
    "owner": frozenset({"read", "write", "admin"}),
}


def role_at_least(role: Role, minimum: Role) -> bool:
    return _RANK[role] >= _RANK[minimum]


@dataclass(frozen=True)
class Principal:
    org_id: str
    role: Role
    user_id: str | None = None
    api_key_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    is_superadmin: bool = False

    @property
    def kind(self) -> Literal["user", "api_key"]:
        return "api_key" if self.api_key_id else "user"

    @property
    def actor_id(self) -> str:
        return self.api_key_id or self.user_id or ""

    def require_role(self, minimum: Role) -> None:
        """Forbidden unless the principal's role in its organization is at least `minimum`."""
        if not role_at_least(self.role, minimum):
            raise Forbidden(
                f"This needs the {minimum} role; you are {self.role} in this organization",
                required_role=minimum,
            )

    def require_scope(self, scope: ApiScope) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"This needs the {scope!r} scope", required_scope=scope)

    def require_superadmin(self) -> None:
        if not self.is_superadmin:
            raise Forbidden("This is for platform operators only")
