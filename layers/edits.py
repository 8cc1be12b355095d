"""Writing features over HTTP (OGC API Features Part 4): create, replace, update, delete, revert to a version.

Each write needs a key of the department owning the layer, is validated like an ETL row
(`feature_input`) and lands in the change log under the key's actor. A feature's ETag is its
version; an `If-Match` naming another version gets 412 and nothing changes. The version test
is repeated inside the write itself (UPDATE … WHERE fid = :fid AND version = :v), so of two
editors writing from the same version exactly one wins and the other learns it.
"""

import shapely
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from layers import crs as crs_
from layers import features
from layers.catalog import LayerSpec
from layers.changelog import feature_json, json_response
from layers.collections import layer_or_404
from layers.feature_input import check_properties, input_crs, parse_feature, parse_geometry, read_json, \
    validated_values
from layers.features import etag_of
from layers.scope import require_scope
from layers.writing import write_transaction
from twin.auth import Principal, authenticate, require_layer_write
from twin.errors import ApiError
from twin.urls import base_url

router = APIRouter(tags=["edits"])

GEOJSON = "application/geo+json"
MAX_FID = 2**63 - 1
RETRIES = 3  # a write without If-Match re-reads and retries when another editor got in first
CRS_PARAM = Query(None, description="CRS of the body's coordinates (overrides the Content-Crs header); "
                                    "CRS84 by default. Axis order is the CRS's: EPSG:4326 and EPSG:4490 are lat, lon.")


def _matches(if_match: str, layer: str, fid: int, version: int) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
    return "*" in tags or etag_of(layer, fid, version) in tags


def _stale(spec: LayerSpec, fid: int, version: int | None) -> ApiError:
    if version is None:
        return ApiError(412, "precondition_failed", f"Feature {fid} does not exist (any more), so no version "
                        "matches your If-Match.", where="header.If-Match")
    return ApiError(412, "precondition_failed", f"Feature {fid} is at version {version}, not the one your "
                    "If-Match names: someone changed it since you read it. Fetch it again and re-apply your change.",
                    where="header.If-Match", headers={"ETag": etag_of(spec.id, fid, version)})


def _writable(layer: str, principal: Principal) -> LayerSpec:
    spec = layer_or_404(layer)
    if spec.kind == "raster":
        raise ApiError(404, "not_a_feature_layer", f"Layer '{spec.id}' is imagery; it has no features to write.",
                       where="path.layer")
    require_layer_write(principal, spec.id)
    return spec


def _response(request: Request, spec: LayerSpec, row, status: int = 200) -> Response:
    headers = {"ETag": etag_of(spec.id, row.fid, row.version), "Content-Crs": crs_.DEFAULT.header}
    if status == 201:
        headers["Location"] = f"{base_url(request)}/collections/{spec.id}/items/{row.fid}"
    return json_response(feature_json(spec, row), status, headers, GEOJSON)


async def _current_row(request: Request, spec: LayerSpec, fid: int):
    async with request.app.state.engine.connect() as conn:
        return await features.current_row(conn, spec, fid)


def _missing(spec: LayerSpec, fid: int) -> ApiError:
    return ApiError(404, "unknown_feature", f"Layer '{spec.id}' has no feature {fid}.", where="path.fid")


async def _guarded(request: Request, principal: Principal, spec: LayerSpec, fid: int, if_match: str | None, write):
    """Apply `await write(row)` (an UPDATE or DELETE statement) to the version just read, guarded by that
    version. Returns the written row, or the current one when the write changed nothing."""
    for _ in range(RETRIES):
        row = await _current_row(request, spec, fid)
        if row is None:  # with If-Match, a feature that is gone fails the precondition (RFC 9110)
            raise _missing(spec, fid) if if_match is None else _stale(spec, fid, None)
        if if_match is not None and not _matches(if_match, spec.id, fid, row.version):
            raise _stale(spec, fid, row.version)
        statement = await write(row)
        if statement is None:
            return row
        async with write_transaction(request, principal.actor) as conn:
            done, latest = await features.write_version(conn, spec, statement, fid, row.version)
            if done is not None:
                await require_scope(conn, principal, spec, row, done)
                return done
            if latest == row.version:
                return row  # identical content: the triggers dropped a no-op update
        if if_match is not None:
            raise _stale(spec, fid, latest)
    raise ApiError(409, "busy_feature", f"Feature {fid} kept changing while we wrote it; retry.", where="path.fid")


@router.post("/collections/{layer}/items", status_code=201)
async def create_feature(request: Request, layer: str, crs: str | None = CRS_PARAM,
                         content_crs: str | None = Header(None, alias="Content-Crs"),
                         principal: Principal = Depends(authenticate)):
    """Add a feature (a GeoJSON Feature); 201 with its Location and ETag."""
    spec = _writable(layer, principal)
    properties, geometry = parse_feature(spec, await read_json(request), input_crs(content_crs, crs))
    values = await run_in_threadpool(validated_values, spec, properties, geometry)
    async with write_transaction(request, principal.actor) as conn:
        row = await features.insert_feature(conn, spec, values)
        await require_scope(conn, principal, spec, None, row)
    return _response(request, spec, row, 201)


@router.put("/collections/{layer}/items/{fid}")
async def replace_feature(request: Request, layer: str, fid: int = Path(ge=1, le=MAX_FID),
                          crs: str | None = CRS_PARAM, content_crs: str | None = Header(None, alias="Content-Crs"),
                          if_match: str | None = Header(None), principal: Principal = Depends(authenticate)):
    """Replace a feature's properties and geometry; fields left out become null."""
    spec = _writable(layer, principal)
    body = await read_json(request)
    if isinstance(body, dict) and body.get("id") not in (None, fid, str(fid)):
        raise ApiError(400, "id_mismatch", f"The body is feature {body['id']!r} but the path names {fid}.",
                       where="body.id")
    properties, geometry = parse_feature(spec, body, input_crs(content_crs, crs))
    values = await run_in_threadpool(validated_values, spec, properties, geometry)

    async def write(_):
        return features.replacing(spec, values)

    return _response(request, spec, await _guarded(request, principal, spec, fid, if_match, write))


def _patch_of(spec: LayerSpec, body, fid: int, crs) -> tuple[dict, object, bool]:
    """(properties to set, geometry, whether the geometry is replaced) of a JSON merge patch on the Feature."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_patch", "A patch is a JSON object, e.g. {\"properties\": {\"name\": \"…\"}}",
                       where="body")
    if body.get("id") not in (None, fid, str(fid)):
        raise ApiError(400, "id_mismatch", f"The patch is for feature {body['id']!r} but the path names {fid}.",
                       where="body.id")
    if "properties" in body and body["properties"] is None:
        raise ApiError(400, "invalid_patch", "properties: null would clear every field; set the fields to clear "
                       "to null one by one", where="body.properties")
    properties = check_properties(spec, body.get("properties"))
    if "geometry" not in body:
        return properties, None, False
    return properties, parse_geometry(body["geometry"], crs), True


@router.patch("/collections/{layer}/items/{fid}")
async def update_feature(request: Request, layer: str, fid: int = Path(ge=1, le=MAX_FID),
                         crs: str | None = CRS_PARAM, content_crs: str | None = Header(None, alias="Content-Crs"),
                         if_match: str | None = Header(None), principal: Principal = Depends(authenticate)):
    """Change some properties (a JSON merge patch: null clears a field) and optionally the geometry."""
    spec = _writable(layer, principal)
    patch, geometry, new_geometry = _patch_of(spec, await read_json(request), fid, input_crs(content_crs, crs))
    if new_geometry and not spec.geometry:
        raise ApiError(422, "unexpected_geometry", f"layer '{spec.id}' holds records without geometry",
                       where="geometry")

    async def write(row):
        if not patch and not new_geometry:
            return None
        stored = row._mapping
        merged = {f.name: stored[f.name] for f in spec.fields} | patch
        shape = geometry if new_geometry else (shapely.from_wkb(bytes(stored["geom"].data)) if spec.geometry else None)
        values = await run_in_threadpool(validated_values, spec, merged, shape)
        changed = {name: values[name] for name in patch} | ({"geom": values["geom"]} if new_geometry else {})
        return features.replacing(spec, changed)

    return _response(request, spec, await _guarded(request, principal, spec, fid, if_match, write))


@router.delete("/collections/{layer}/items/{fid}", status_code=204)
async def delete_feature(request: Request, layer: str, fid: int = Path(ge=1, le=MAX_FID),
                         if_match: str | None = Header(None), principal: Principal = Depends(authenticate)):
    """Delete a feature; its versions stay in the history (and it can be reverted)."""
    spec = _writable(layer, principal)

    async def write(_):
        return features.deleting(spec)

    await _guarded(request, principal, spec, fid, if_match, write)
    return Response(status_code=204)


@router.post("/collections/{layer}/items/{fid}/revert",
             responses={200: {"content": {GEOJSON: {}}, "description": "The feature as it now is"}})
async def revert_feature(request: Request, layer: str, fid: int = Path(ge=1, le=MAX_FID),
                         to_version: int = Query(ge=1, le=2**31 - 1, description="the version to bring back"),
                         if_match: str | None = Header(None), principal: Principal = Depends(authenticate)):
    """Bring back a past version's properties and geometry as a new version (re-creating a deleted feature)."""
    spec = _writable(layer, principal)
    row = await _current_row(request, spec, fid)
    if row is not None and row.version == to_version:
        if if_match is not None and not _matches(if_match, spec.id, fid, row.version):
            raise _stale(spec, fid, row.version)
        return _response(request, spec, row)
    async with request.app.state.engine.connect() as conn:
        kept, known = await features.versions(conn, spec, fid, to_version)
    if not kept:
        if not known:
            raise _missing(spec, fid)
        raise ApiError(404, "unknown_version", f"Feature {fid} has no version {to_version}; its versions: "
                       f"{', '.join(map(str, known))}.", where="query.to_version")
    if row is not None:
        async def write(_):
            return features.restoring(spec, fid, to_version)

        return _response(request, spec, await _guarded(request, principal, spec, fid, if_match, write))
    if if_match is not None:
        raise _stale(spec, fid, None)
    async with write_transaction(request, principal.actor) as conn:
        restored = await features.reinsert(conn, spec, fid, to_version)
        await require_scope(conn, principal, spec, None, restored)
    return _response(request, spec, restored, 201)
