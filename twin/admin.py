"""Catalog administration with an admin key: which layers are private (see twin.access)."""

import logging

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, StrictBool

from twin.access import LayerAccess, private_layers, reload, switch_statement
from twin.auth import Principal, authenticate
from twin.errors import ApiError

log = logging.getLogger("twin.access")
router = APIRouter(prefix="/admin", tags=["admin"])


class AccessChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    private: StrictBool


async def admin_key(request: Request, principal: Principal = Depends(authenticate)) -> Principal:
    if not principal.is_admin:
        client = request.client.host if request.client else "unknown"
        log.warning("refused %s %s from %s: key %s of %s is not an admin key", request.method, request.url.path,
                    client, principal.prefix, principal.department)
        raise ApiError(403, "admin_only", f"Only an admin key manages the catalog; the key of "
                       f"{principal.department} is not one.")
    return principal


def _state(access: LayerAccess, private: frozenset[str], layer: str) -> dict:
    return {"layer": layer, "private": layer in private, "default": access.defaults[layer],
            "owner": access.owners[layer]}


@router.get("/layers/access", summary="Every layer's privacy: private now, by its spec, its owner")
async def layers_access(request: Request, admin: Principal = Depends(admin_key)):
    access: LayerAccess = request.app.state.access
    private = await private_layers(request.app)
    return {"layers": [_state(access, private, layer) for layer in access.defaults]}


@router.put("/layers/{layer}/access", summary="Make a layer private (reads need a key that may) or public")
async def switch_access(layer: str, change: AccessChange, request: Request, admin: Principal = Depends(admin_key)):
    access: LayerAccess = request.app.state.access
    if layer not in access.defaults:
        raise ApiError(404, "unknown_layer", f"No layer '{layer[:80]}'. See /collections for the catalog.",
                       where="path.layer")
    async with request.app.state.engine.begin() as conn:
        await conn.execute(switch_statement(layer, change.private, admin.actor))
    await reload(request.app)  # at once here; other processes follow the notice
    log.info("%s made layer %s %s", admin.actor, layer, "private" if change.private else "public")
    return _state(access, await private_layers(request.app), layer)
