"""Who is calling: the bearer tokens of the REST and gRPC APIs and the role each one grants.

    creds = Credentials(admin="…", read="…")         # [api] auth_token, [api] read_token
    role = creds.role_of(header, where="header `Authorization: Bearer <token>`")
    require(role, "admin", "POST /api/v1/racks/edge-1/adopt")

Two roles: `admin` (`[api] auth_token`, every operation) and `read` (`[api] read_token`:
operations that change nothing — REST `GET` and the operations declared `reads_only` (the
telemetry SQL query, a POST because its text is a body), gRPC `List*`/`Get*`/`Watch*`/`Query*`).
Tokens are compared in constant time, both of them on every call (which one matched does not show
in the timing of a refusal). Refusals: `UnauthenticatedError` (401 / UNAUTHENTICATED: no or an
unknown token), `ForbiddenError` (403 / PERMISSION_DENIED: the read-only token asked to change
something). No message ever contains a token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from mixer.api.errors import ForbiddenError, UnauthenticatedError

__all__ = ["Credentials", "Role", "is_read_only_rpc", "require"]

Role = Literal["admin", "read"]
_READ_RPC_PREFIXES = ("List", "Get", "Watch", "Query")


@dataclass(frozen=True, slots=True)
class Credentials:
    admin: str
    read: str | None = None

    def __post_init__(self) -> None:
        if self.read is not None and hmac.compare_digest(self.read, self.admin):
            raise ValueError("the read-only token must differ from the admin token")

    def role_of(self, header: str | None, *, where: str) -> Role:
        """The role `Bearer <token>` in `header` grants; UnauthenticatedError otherwise."""
        scheme, _, credential = (header or "").strip().partition(" ")
        token = credential.strip().encode("utf-8", "surrogatepass")
        if scheme.lower() != "bearer" or not token:
            raise UnauthenticatedError(
                f"this operation needs a token: send {where} with the mixer's [api] auth_token "
                "(FLUXRIG_API_TOKEN) or read_token"
            )
        admin = hmac.compare_digest(token, self.admin.encode())
        read = self.read is not None and hmac.compare_digest(token, self.read.encode())
        if admin:
            return "admin"
        if read:
            return "read"
        raise UnauthenticatedError(
            "the bearer token is not valid for this mixer; check [api] auth_token "
            "(FLUXRIG_API_TOKEN) or read_token",
            presented=True,
        )


def require(role: Role, needed: Role, operation: str) -> None:
    """ForbiddenError when `role` may not run `operation` (which needs `needed`)."""
    if needed == "admin" and role != "admin":
        raise ForbiddenError(
            f"{operation} changes the mixer's state: the read-only token may not do it; use the "
            "admin token ([api] auth_token)"
        )


def is_read_only_rpc(method: str) -> bool:
    """`/fluxrig.v1.RackService/ListRacks` → True: gRPC methods that change nothing (by name:
    List*, Get*, Watch*, Query*; a method that changes something must not be named so)."""
    name = method.rsplit("/", 1)[-1]
    return name.startswith(_READ_RPC_PREFIXES)
