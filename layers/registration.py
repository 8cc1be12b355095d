"""`/admin/layers`: register, change, archive, restore and revert layers at run time (layers.registry).

An admin key manages every layer; a department key registers and manages its own department's layers, and
may write the layers it registered. A spec is sent as JSON, or as TOML with `Content-Type: application/toml`.
"""

import logging

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from layers import registry
from layers.catalog import LayerSpec
from layers.following import reload
from twin.auth import Principal, authenticate
from twin.errors import ApiError

log = logging.getLogger("twin.layers")
router = APIRouter(prefix="/admin/layers", tags=["admin"])
MAX_SPEC_BYTES = 256 << 10
SPEC_BODY = {"requestBody": {"required": True, "description": "a layer spec, as in layers/specs/*.toml (docs/layers.md)",
                             "content": {"application/json": {"schema": {"type": "object"}},
                                         "application/toml": {"schema": {"type": "string"}}}}}
ALLOW_LOSS = Query(False, description="take a change that could refuse or lose stored data (its values stay in "
                                      "the layer's history)")


def _department(principal: Principal) -> str | None:
    return None if principal.is_admin else principal.department


async def _spec(request: Request) -> LayerSpec:
    body = await request.body()
    if len(body) > MAX_SPEC_BYTES:
        raise ApiError(413, "spec_too_large", f"A spec is at most {MAX_SPEC_BYTES >> 10} KiB.", where="body")
    media = "toml" if "toml" in request.headers.get("content-type", "") else "json"
    return _step(lambda: registry.parse(body, media))


def _step(run):
    try:
        return run()
    except registry.SpecError as e:
        raise ApiError(e.status, e.code, e.detail, where=e.where) from e


async def _run(request: Request, step, principal: Principal) -> registry.Step | None:
    try:
        async with request.app.state.engine.begin() as conn:
            done = await conn.run_sync(lambda sync: _step(lambda: step(sync)))
            if done is not None and done.change == "register" and not principal.is_admin:
                await conn.execute(text("UPDATE twin.api_key SET layers = array_append(layers, :layer) "
                                        "WHERE id = :key"), {"layer": done.layer, "key": principal.key_id})
    except DBAPIError as e:  # the database refused the DDL: nothing of it was kept
        raise ApiError(422, "invalid_spec", f"The database refused the layer: {str(e.orig).splitlines()[0]}") from e
    await reload(request.app)  # at once here; other processes follow the notice
    if done is not None:
        log.info("%s: %s of layer %s, version %d", principal.actor, done.change, done.layer, done.version)
    return done


def _answer(request: Request, step: registry.Step | None, layer: str, status: int = 200) -> JSONResponse:
    body = {"layer": layer, "changed": step is not None,
            "links": [{"rel": "collection", "href": str(request.url_for("collection", layer=layer))},
                      {"rel": "versions", "href": str(request.url_for("layer_versions", layer=layer))}]}
    if step is not None:
        body |= {"version": step.version, "change": step.change, "note": step.note or None, "ddl": step.ddl}
    return JSONResponse(body, status_code=status)


@router.post("", status_code=201, summary="Register a layer from its spec (JSON, or TOML)", openapi_extra=SPEC_BODY)
async def register_layer(request: Request, principal: Principal = Depends(authenticate)):
    spec = await _spec(request)
    step = await _run(request, lambda conn: registry.register(conn, spec, principal.actor, _department(principal)),
                      principal)
    return _answer(request, step, spec.id, 201)


@router.put("/{layer}", summary="Change a layer's spec, as a new version", openapi_extra=SPEC_BODY)
async def change_layer(layer: str, request: Request, allow_loss: bool = ALLOW_LOSS,
                       principal: Principal = Depends(authenticate)):
    spec = await _spec(request)
    if spec.id != layer:
        raise ApiError(422, "invalid_spec", f"The spec is of '{spec.id[:80]}', not of '{layer[:80]}'.", where="id")
    step = await _run(request, lambda conn: registry.change(conn, spec, principal.actor, allow_loss,
                                                            _department(principal)), principal)
    return _answer(request, step, layer)


@router.delete("/{layer}", summary="Archive a layer: off the map, its data and history kept, to be restored")
async def archive_layer(layer: str, request: Request, principal: Principal = Depends(authenticate)):
    step = await _run(request, lambda conn: registry.archive(conn, layer, principal.actor, _department(principal)),
                      principal)
    return _answer(request, step, layer)


@router.post("/{layer}/restore", summary="Restore an archived layer")
async def restore_layer(layer: str, request: Request, principal: Principal = Depends(authenticate)):
    step = await _run(request, lambda conn: registry.restore(conn, layer, principal.actor, _department(principal)),
                      principal)
    return _answer(request, step, layer)


@router.post("/{layer}/revert", summary="Take a layer back to the spec of an earlier version, as a new version")
async def revert_layer(layer: str, request: Request, version: int = Query(..., ge=1, le=2**31 - 1),
                       allow_loss: bool = ALLOW_LOSS, principal: Principal = Depends(authenticate)):
    step = await _run(request, lambda conn: registry.revert(conn, layer, version, principal.actor, allow_loss,
                                                            _department(principal)), principal)
    return _answer(request, step, layer)


@router.get("/{layer}/versions", name="layer_versions", summary="Every version of a layer's spec, with its DDL")
async def layer_versions(layer: str, request: Request, principal: Principal = Depends(authenticate)):
    async with request.app.state.engine.connect() as conn:
        found = await conn.run_sync(lambda sync: registry.versions(sync, layer))
    if not found:
        raise ApiError(404, "unknown_layer", f"No layer '{layer[:80]}' was ever registered.", where="path.layer")
    owner = found[-1]["spec"]["department"]
    if not principal.is_admin and principal.department != owner:
        raise ApiError(403, "forbidden_layer", f"The versions of '{layer}' are for {owner} and admins.")
    return {"layer": layer, "versions": found}
