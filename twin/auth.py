"""Department API keys: created once, stored hashed, sent as `Authorization: Bearer <key>`.

A key is `twin_<prefix>_<secret>`: the prefix finds the row, the secret is checked
against its SHA-256 in constant time. Keys are random 256-bit values, so a plain
SHA-256 (no slow hash) is the right tool. Every request reads the key's row, so a
revocation holds from the next request on. A refused key is logged with the client's
address and the key's prefix; secrets never reach a log (`KeyRedaction` scrubs any that a
message or traceback would carry).
"""

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import text
from sqlalchemy.engine import Connection

from twin import broker
from twin.errors import ApiError

log = logging.getLogger("twin.auth")
PREFIX = re.compile(r"[0-9A-Za-z]{1,32}")
SECRETS = [  # (pattern, replacement) for what may carry a key in a log line
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s'\",;)\]}]{6,}"), r"\1\2[redacted]"),
    (re.compile(r"(?i)\b(authorization\s*[:=]\s*)(?!bearer\b|basic\b)[^\s'\",;)\]}]+"), r"\1[redacted]"),
    (re.compile(r"\b(twin_[0-9A-Za-z]{1,64}_)[A-Za-z0-9_-]{6,}"), r"\1[redacted]"),
]


ROLES = ("reporter", "supervisor", "dispatcher", "department", "contractor")  # the case loop's (cases.loop)


@dataclass(frozen=True)
class Principal:
    key_id: int
    prefix: str
    department: str
    layers: tuple[str, ...]
    is_admin: bool
    role: str | None = None  # one of ROLES, or None for a plain department key
    # where and what the key may touch: grid and street codes, case/component class prefixes ("C0118", "E01");
    # empty means anywhere (grids and streets together: in any of the grids or any of the streets)
    grids: tuple[str, ...] = ()
    streets: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()

    def may_write(self, layer: str) -> bool:
        return self.is_admin or layer in self.layers

    @property
    def scoped(self) -> bool:
        return bool(self.grids or self.streets or self.classes)

    def covers(self, grid: str | None, street: str | None, class_code: str | None) -> bool:
        """Whether a feature in `grid` and `street` of class `class_code` (None: the layer has no class) is in
        the key's scope."""
        area = not (self.grids or self.streets) or grid in self.grids or street in self.streets
        kind = not self.classes or class_code is None or any(class_code.startswith(c) for c in self.classes)
        return self.is_admin or (area and kind)

    def scope_text(self) -> str:
        parts = [f"{name} {', '.join(values)}" for name, values in
                 (("grids", self.grids), ("streets", self.streets), ("classes", self.classes)) if values]
        return "; ".join(parts) or "everywhere"

    @property
    def actor(self) -> str:
        return f"{self.department}/{self.prefix}"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(conn: Connection, department: str, layers: list[str], is_admin: bool = False, *,
               role: str | None = None, grids: list[str] = (), streets: list[str] = (),
               classes: list[str] = ()) -> str:
    prefix, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
    conn.execute(text("INSERT INTO twin.api_key (prefix, secret_hash, department, layers, is_admin, role, "
                      "scope_grids, scope_streets, scope_classes) "
                      "VALUES (:prefix, :hash, :department, :layers, :is_admin, :role, :grids, :streets, :classes)"),
                 {"prefix": prefix, "hash": _hash(secret), "department": department,
                  "layers": layers, "is_admin": is_admin, "role": role, "grids": list(grids),
                  "streets": list(streets), "classes": list(classes)})
    key = f"twin_{prefix}_{secret}"
    broker.remember_key(conn, prefix, key)  # its MQTT password hash, made while the secret is known
    return key


def list_keys(conn: Connection) -> list[dict]:
    rows = conn.execute(text("SELECT id, prefix, department, layers, is_admin, role, scope_grids, scope_streets, "
                             "scope_classes, created_at, revoked_at FROM twin.api_key ORDER BY id"))
    return [dict(r._mapping) for r in rows]


def revoke_key(conn: Connection, prefix: str) -> bool:
    result = conn.execute(text("UPDATE twin.api_key SET revoked_at = now() "
                               "WHERE prefix = :prefix AND revoked_at IS NULL"), {"prefix": prefix})
    broker.refresh(conn)  # the broker drops the key at once
    return result.rowcount == 1


def redact(message: str) -> str:
    for pattern, replacement in SECRETS:
        message = pattern.sub(replacement, message)
    return message


class KeyRedaction(logging.Filter):
    """A handler filter that scrubs keys and Authorization values from every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(a) if isinstance(a, str) else a for k, a in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def _parse(key: str) -> tuple[str, str] | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "twin" or not PREFIX.fullmatch(parts[1]) or not parts[2]:
        return None
    return parts[1], parts[2]


def _refuse(request: Request, code: str, detail: str, reason: str, prefix: str | None = None) -> ApiError:
    client = request.client.host if request.client else "unknown"
    log.warning("refused API key from %s: %s (key prefix %s) on %s %s", client, reason, prefix or "-",
                request.method, request.url.path)
    return ApiError(401, code, detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(request: Request) -> Principal:
    """The principal behind the request's bearer key, or a 401 that says what is wrong."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _refuse(request, "missing_key", "This request needs a department API key: "
                      "send 'Authorization: Bearer <key>'.", "no bearer key")
    invalid = "The API key is unknown or revoked."
    parsed = _parse(key.strip())
    if parsed is None:
        raise _refuse(request, "invalid_key", invalid, "not a key of the form twin_<prefix>_<secret>")
    prefix, secret = parsed
    async with request.app.state.engine.connect() as conn:
        row = (await conn.execute(text(
            "SELECT id, prefix, secret_hash, department, layers, is_admin, revoked_at IS NOT NULL AS revoked, "
            "role, scope_grids, scope_streets, scope_classes FROM twin.api_key WHERE prefix = :prefix"),
            {"prefix": prefix})).first()
    if row is None:
        raise _refuse(request, "invalid_key", invalid, "unknown prefix", prefix)
    if not hmac.compare_digest(row.secret_hash, _hash(secret)):
        raise _refuse(request, "invalid_key", invalid, "wrong secret", prefix)
    if row.revoked:
        raise _refuse(request, "invalid_key", invalid, "revoked key", prefix)
    return Principal(row.id, row.prefix, row.department, tuple(row.layers), row.is_admin, row.role,
                     tuple(row.scope_grids), tuple(row.scope_streets), tuple(row.scope_classes))


def require_layer_write(principal: Principal, layer: str) -> None:
    if not principal.may_write(layer):
        log.warning("key %s of %s refused a write to layer %s", principal.prefix, principal.department, layer)
        raise ApiError(403, "forbidden_layer",
                       f"The key of {principal.department} may not write layer '{layer}'; "
                       f"it may write: {', '.join(principal.layers) or 'no layers'}.")
