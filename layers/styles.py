"""Map styles: MapLibre style documents, served with URLs on this server.

A catalog layer's style is the one stored in `twin.layer_style` (name = layer id) if there is one, else the file
`styles/layers/<layer>.json`. A layer registered at run time gets its default style (layers.default_style) stored as
it is registered (layers.registry); its owner may replace it (`PUT /styles/{layer}`), and `DELETE` goes back to
the file, or to the default for a layer that has no file. A layer with neither (a series, a private companion
layer shipped without a file) is not drawn. `styles/<name>.json` is another style (a composite when its
`metadata["twin:groups"]` lists layers).

A private layer's style is served, listed and drawn in the composite only for those who may read the layer
(twin.access). The composite (the one map) draws every layer of the catalog that has a style and the caller may
read: its groups keep the layers they list, in their order; a layer they do not list joins the group titled
like its spec's `group`, or a new group of that title at the end. Archived layers are not in the catalog, so
not in the map. Each layer's style layers are drawn from the composite's one vector source
(`metadata["twin:composite-source"]`, a `/tiles/onemap/...` URL asked for exactly those layers), ordered
raster < fill < line < circle < symbol so points and labels stay on top; each layer's own style metadata (e.g.
"twin:search", the fields the viewer searches) goes to `metadata["twin:layers"]`.

Files are read on every request (they are small), so a style edited on disk is served at once. URLs in styles
are server paths ("/collections/..."); each response carries them absolute on the base URL the client used
(`twin.urls.base_url`: TWIN_PUBLIC_URL or X-Forwarded-*).

Who may replace a layer's style: an admin key or a key of the department that owns the layer. No version of a
replaced style is kept: the answer to a PUT or DELETE carries the style it replaced (the caller's undo), and
the file or default stays to go back to.
"""

import json
import logging
import re
from pathlib import Path

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Column, DateTime, MetaData, Table, Text, delete, func, select
from sqlalchemy.dialects.postgresql import JSONB, insert

from layers.catalog import LayerSpec, catalog, shipped
from twin.access import hidden_layers, require_read
from twin.auth import Principal, authenticate
from twin.errors import ApiError
from layers.default_style import default_style, drawn
from layers import style_spec
from layers.style_check import MAX_STYLE_BYTES, check, parse
from twin.urls import base_url

log = logging.getLogger("twin.styles")
router = APIRouter(tags=["styles"])

STYLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
STYLE_TYPE = "application/vnd.mapbox.style+json"
DRAW_ORDER = {"background": 0, "raster": 1, "hillshade": 1, "fill": 2, "fill-extrusion": 2, "line": 3,
              "heatmap": 4, "circle": 4, "symbol": 5}
NO_STORE = {"Cache-Control": "no-cache"}

layer_style = Table("layer_style", MetaData(), Column("name", Text, primary_key=True), Column("style", JSONB),
                    Column("changed_by", Text), Column("changed_at", DateTime(timezone=True)), schema="twin")


def _directory(request: Request) -> Path:
    return Path(request.app.state.settings.styles_dir)


def _read(path: Path) -> dict:
    try:
        style = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(500, "broken_style", f"The style file {path.name} cannot be read: {e}",
                       where=str(path.relative_to(path.parent.parent))) from e
    if not isinstance(style, dict) or not isinstance(style.get("layers"), list):
        raise ApiError(500, "broken_style", f"The style file {path.name} is not a MapLibre style (no layers).")
    return style


def _drawn_layers() -> dict[str, LayerSpec]:
    return {layer_id: spec for layer_id, spec in catalog().items() if drawn(spec)}


async def _stored(request: Request, names) -> dict[str, dict]:
    """The styles stored for `names` (layer ids), by name."""
    names = list(names)
    if not names:
        return {}
    async with request.app.state.engine.connect() as conn:
        rows = await conn.execute(select(layer_style.c.name, layer_style.c.style).where(layer_style.c.name.in_(names)))
        return {name: style for name, style in rows}


def _layer_style(directory: Path, spec: LayerSpec, stored: dict[str, dict]) -> tuple[dict, str] | None:
    """A layer's style and where it comes from ("stored" or "file"); None when it has neither."""
    if spec.id in stored:
        style = stored[spec.id]
        if not (isinstance(style, dict) and isinstance(style.get("layers"), list)):  # written past the PUT's check
            raise ApiError(500, "broken_style", f"The stored style of layer {spec.id} has no layers: replace it "
                           f"(PUT /styles/{spec.id}) or remove it (DELETE).")
        return style, "stored"
    path = directory / "layers" / f"{spec.id}.json"
    return (_read(path), "file") if path.is_file() else None


def _with_layers(url: str, layer_ids: list[str]) -> str:
    return f"{url}{'&' if '?' in url else '?'}layers={','.join(layer_ids)}"


def _grouped(groups: list[dict], specs: dict[str, LayerSpec]) -> list[dict]:
    """The composite's groups with the layers of `specs` only, and every one of them: those the groups do not
    list go to the group titled as their spec's group, or to a new one at the end."""
    listed = {layer_id for group in groups for layer_id in group["layers"]}
    for group in groups:
        group["layers"] = [layer_id for layer_id in group["layers"] if layer_id in specs]
    for spec in specs.values():
        if spec.id in listed:
            continue
        group = next((g for g in groups if g["title"] == spec.group), None)
        if group is None:
            group = {"id": spec.group, "title": spec.group, "layers": []}
            groups.append(group)
        group["layers"].append(spec.id)
    return groups


def compose(directory: Path, style: dict, specs: dict[str, LayerSpec], stored: dict[str, dict]) -> dict:
    """The composite style drawing the layers of `specs` (those the caller may read), grouped (`_grouped`)."""
    meta = style.get("metadata", {})
    composite_id = meta.get("twin:composite-source")
    composite = style.get("sources", {}).get(composite_id)
    if composite is None:
        raise ApiError(500, "broken_style", f"The composite source '{composite_id}' is not among the style's sources.")
    styles = {layer_id: found[0] for layer_id, spec in specs.items()
              if (found := _layer_style(directory, spec, stored)) is not None}
    drawn_layers, vector_layers, promote = [], [], {}
    for group in _grouped(meta["twin:groups"], {layer_id: specs[layer_id] for layer_id in styles}):
        for layer_id in group["layers"]:
            part = styles[layer_id]
            meta.setdefault("twin:layers", {})[layer_id] = part.get("metadata", {})
            sources = part.get("sources", {})
            for source_id, source in sources.items():
                if source.get("type") == "vector":
                    vector_layers.append(layer_id)
                    if isinstance(source.get("promoteId"), str):
                        promote[layer_id] = source["promoteId"]
                    elif isinstance(source.get("promoteId"), dict):
                        promote.update(source["promoteId"])
                else:
                    style["sources"].setdefault(source_id, source)
            for layer in part["layers"]:
                layer = dict(layer, metadata={**layer.get("metadata", {}), "twin:layer": layer_id,
                                              "twin:group": group["id"]})
                if sources.get(layer.get("source"), {}).get("type") == "vector":
                    layer["source"] = composite_id
                drawn_layers.append(layer)
    composite["tiles"] = [_with_layers(url, list(dict.fromkeys(vector_layers))) for url in composite.get("tiles", [])]
    if promote:
        composite["promoteId"] = promote
    style["layers"] = style["layers"] + sorted(drawn_layers, key=lambda layer: DRAW_ORDER.get(layer["type"], 5))
    return style


def _absolute(url, base: str):
    return f"{base}{url}" if isinstance(url, str) and url.startswith("/") else url


def absolutize(style: dict, base: str) -> dict:
    """Server paths in sources, glyphs and sprite made absolute on `base`."""
    for source in style.get("sources", {}).values():
        for key in ("url", "data"):
            if key in source:
                source[key] = _absolute(source[key], base)
        if "tiles" in source:
            source["tiles"] = [_absolute(url, base) for url in source["tiles"]]
    if "glyphs" in style:
        style["glyphs"] = _absolute(style["glyphs"], base)
    sprite = style.get("sprite")
    if isinstance(sprite, list):
        style["sprite"] = [dict(s, url=_absolute(s.get("url"), base)) for s in sprite]
    elif sprite is not None:
        style["sprite"] = _absolute(sprite, base)
    return style


def _other_file(directory: Path, name: str) -> Path | None:
    """The file of a style that is not a layer's (the composite, a theme)."""
    path = directory / f"{name}.json"
    return path if STYLE_NAME.match(name) and path.is_file() else None


async def load(request: Request, name: str) -> dict | None:
    directory, specs = _directory(request), _drawn_layers()
    if name in specs:
        await require_read(request, [name], "path.name")
        found = _layer_style(directory, specs[name], await _stored(request, [name]))
        if found is not None:
            return found[0]
    path = _other_file(directory, name)
    if path is None:
        return None
    style = _read(path)
    if "twin:groups" in style.get("metadata", {}):
        hidden = await hidden_layers(request)
        readable = {layer_id: spec for layer_id, spec in specs.items() if layer_id not in hidden}
        style = compose(directory, style, readable, await _stored(request, readable))
    return style


def _other_names(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.json") if STYLE_NAME.match(p.stem))


def _entry(name: str, style: dict, origin: str | None, base: str) -> dict:
    entry = {"id": name, "title": style.get("name", name),
             "links": [{"rel": "stylesheet", "type": STYLE_TYPE, "href": f"{base}/styles/{name}"}]}
    if "twin:layer" in style.get("metadata", {}):
        entry["twin:layer"] = style["metadata"]["twin:layer"]
    if origin:
        entry["twin:origin"] = origin
    return entry


@router.get("/styles", summary="Every style: the composite one map and each layer's")
async def list_styles(request: Request):
    directory, base, hidden = _directory(request), base_url(request), await hidden_layers(request)
    specs = {layer_id: spec for layer_id, spec in _drawn_layers().items() if layer_id not in hidden}
    others = [name for name in _other_names(directory) if name not in specs and name not in hidden]
    stored = await _stored(request, specs)
    styles = [_entry(name, _read(directory / f"{name}.json"), None, base) for name in others]
    for layer_id in sorted(specs):
        found = _layer_style(directory, specs[layer_id], stored)
        if found is not None:
            styles.append(_entry(layer_id, *found, base))
    return JSONResponse({"styles": styles, "links": [{"rel": "self", "type": "application/json",
                                                      "href": f"{base}/styles"}]}, headers=NO_STORE)


@router.get("/styles/{name}", response_class=Response,
            responses={200: {"content": {STYLE_TYPE: {}}, "description": "A MapLibre style document"}})
async def get_style(name: str, request: Request):
    style = await load(request, name)
    if style is None:
        raise ApiError(404, "unknown_style", f"No style '{name[:80]}'; /styles lists them.", where="path.name")
    return JSONResponse(absolutize(style, base_url(request)), media_type=STYLE_TYPE, headers=NO_STORE)


async def _owned_layer(request: Request, name: str, principal: Principal) -> LayerSpec:
    """The drawn layer `name` if the caller may restyle it."""
    spec = _drawn_layers().get(name)
    if spec is None:
        raise ApiError(404, "unknown_layer", f"No map layer '{name[:80]}' to style (see /collections; a series "
                       "has no style of its own).", where="path.name")
    if not (principal.is_admin or principal.department == spec.department):
        log.warning("key %s of %s refused restyling layer %s", principal.prefix, principal.department, name)
        raise ApiError(403, "forbidden_layer", f"Only {spec.department} (or an admin) may restyle layer '{name}'; "
                       f"the key of {principal.department} may not.", where="path.name")
    return spec


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, "body_too_large", f"A style is at most {MAX_STYLE_BYTES >> 20} MiB.", where="body")
    if declared.isdigit() and int(declared) > MAX_STYLE_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_STYLE_BYTES:
            raise too_large
    return bytes(body)


def _changed(name: str, style: dict | None, replaced: dict | None, actor: str, changed_at, base: str) -> JSONResponse:
    """The answer to a change: the style now served and the one it replaced (the caller's undo)."""
    return JSONResponse({"name": name, "changed_by": actor, "changed_at": changed_at and changed_at.isoformat(),
                         "style": absolutize(style, base) if style is not None else None,
                         "replaced": absolutize(replaced, base) if replaced is not None else None})


STYLE_BODY = {"requestBody": {"required": True, "description": f"A MapLibre style document (at most "
                              f"{MAX_STYLE_BYTES >> 20} MiB) drawing the layer from sources on this server",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}


@router.put("/styles/{name}", openapi_extra=STYLE_BODY,
            summary="Replace a layer's style (its owning department's key or an admin key)")
async def put_style(name: str, request: Request, principal: Principal = Depends(authenticate)):
    spec = await _owned_layer(request, name, principal)
    base = base_url(request)
    style = check(name, parse(await _body(request)), base)
    await style_spec.validate(style)
    async with request.app.state.engine.begin() as conn:
        old = (await conn.execute(select(layer_style.c.style).where(layer_style.c.name == name)
                                  .with_for_update())).scalar()
        row = insert(layer_style).values(name=name, style=style, changed_by=principal.actor)
        changed_at = (await conn.execute(row.on_conflict_do_update(
            index_elements=[layer_style.c.name], set_={"style": row.excluded.style, "changed_by": principal.actor,
                                                       "changed_at": func.now()})
            .returning(layer_style.c.changed_at))).scalar_one()
    if old is None:
        old = (_layer_style(_directory(request), spec, {}) or (None,))[0]
    log.info("%s replaced the style of layer %s", principal.actor, name)
    return _changed(name, style, old, principal.actor, changed_at, base)


@router.delete("/styles/{name}", summary="Go back to a layer's style file, or to the default it was registered with")
async def delete_style(name: str, request: Request, principal: Principal = Depends(authenticate)):
    spec = await _owned_layer(request, name, principal)
    found = _layer_style(_directory(request), spec, {})
    # a layer registered at run time has no file: it goes back to its default (a shipped one without a file is
    # not drawn until it is given a style)
    default = default_style(spec) if found is None and spec.id not in shipped() else None
    async with request.app.state.engine.begin() as conn:
        old, changed_at = (await conn.execute(
            delete(layer_style).where(layer_style.c.name == name).returning(layer_style.c.style, func.now()))).first() \
            or (None, None)
        if default is not None:
            await conn.execute(insert(layer_style).values(name=name, style=default, changed_by=principal.actor))
    if old is not None:
        log.info("%s removed the stored style of layer %s", principal.actor, name)
    style = found[0] if found is not None else default
    return _changed(name, style, old, principal.actor, changed_at, base_url(request))
