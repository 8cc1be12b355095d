"""Department API keys: created once, stored hashed, sent as `Authorization: Bearer <key>`.

A key is `twin_<prefix>_<secret>`: the prefix finds the row, the secret is checked
against its SHA-256 in constant time. Keys are random 256-bit values, so a plain
SHA-256 (no slow hash) is the right tool.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import text
from sqlalchemy.engine import Connection

from twin.errors import ApiError


@dataclass(frozen=True)
class Principal:
    key_id: int
    prefix: str
    department: str
    layers: tuple[str, ...]
    is_admin: bool

    def may_write(self, layer: str) -> bool:
        return self.is_admin or layer in self.layers

    @property
    def actor(self) -> str:
        return f"{self.department}/{self.prefix}"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(conn: Connection, department: str, layers: list[str], is_admin: bool = False) -> str:
    prefix, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
    conn.execute(text("INSERT INTO twin.api_key (prefix, secret_hash, department, layers, is_admin) "
                      "VALUES (:prefix, :hash, :department, :layers, :is_admin)"),
                 {"prefix": prefix, "hash": _hash(secret), "department": department,
                  "layers": layers, "is_admin": is_admin})
    return f"twin_{prefix}_{secret}"


def list_keys(conn: Connection) -> list[dict]:
    rows = conn.execute(text("SELECT id, prefix, department, layers, is_admin, created_at, revoked_at "
                             "FROM twin.api_key ORDER BY id"))
    return [dict(r._mapping) for r in rows]


def revoke_key(conn: Connection, prefix: str) -> bool:
    result = conn.execute(text("UPDATE twin.api_key SET revoked_at = now() "
                               "WHERE prefix = :prefix AND revoked_at IS NULL"), {"prefix": prefix})
    return result.rowcount == 1


def _parse(key: str) -> tuple[str, str] | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "twin" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


async def authenticate(request: Request) -> Principal:
    """The principal behind the request's bearer key, or a 401 that says what is wrong."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "missing_key", "This request needs a department API key: "
                       "send 'Authorization: Bearer <key>'.")
    parsed = _parse(key.strip())
    row = None
    if parsed:
        async with request.app.state.engine.connect() as conn:
            row = (await conn.execute(text(
                "SELECT id, prefix, secret_hash, department, layers, is_admin FROM twin.api_key "
                "WHERE prefix = :prefix AND revoked_at IS NULL"), {"prefix": parsed[0]})).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(parsed[1])):
        raise ApiError(401, "invalid_key", "The API key is unknown or revoked.")
    return Principal(row.id, row.prefix, row.department, tuple(row.layers), row.is_admin)


def require_layer_write(principal: Principal, layer: str) -> None:
    if not principal.may_write(layer):
        raise ApiError(403, "forbidden_layer",
                       f"The key of {principal.department} may not write layer '{layer}'; "
                       f"it may write: {', '.join(principal.layers) or 'no layers'}.")
