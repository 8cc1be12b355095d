"""Map styles: MapLibre style documents kept as data in `styles/`, served with URLs on this server.

`styles/layers/<layer>.json` is one layer's complete style (its own source and style layers);
`styles/<name>.json` with `metadata["twin:groups"]` is a composite (the one map): its groups list
layer ids, and each listed layer's style layers are drawn from the composite's one vector source
(`metadata["twin:composite-source"]`, a `/tiles/onemap/...` URL asked for exactly those layers),
ordered raster < fill < line < circle < symbol so points and labels stay on top; each layer's own
style metadata (e.g. "twin:search", the fields the viewer searches) goes to `metadata["twin:layers"]`.

Files are read on every request (they are small), so a style edited on disk is served at once.
URLs in the files are server paths ("/collections/..."); each response carries them absolute on
the base URL the client used (`twin.urls.base_url`: TWIN_PUBLIC_URL or X-Forwarded-*).
"""

import json
import re
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from twin.access import hidden_layers
from twin.errors import ApiError
from twin.urls import base_url

router = APIRouter(tags=["styles"])

STYLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
STYLE_TYPE = "application/vnd.mapbox.style+json"
DRAW_ORDER = {"background": 0, "raster": 1, "hillshade": 1, "fill": 2, "fill-extrusion": 2, "line": 3,
              "heatmap": 4, "circle": 4, "symbol": 5}
NO_STORE = {"Cache-Control": "no-cache"}


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


def _path(directory: Path, name: str) -> Path | None:
    if not STYLE_NAME.match(name):
        return None
    for candidate in (directory / f"{name}.json", directory / "layers" / f"{name}.json"):
        if candidate.is_file():
            return candidate
    return None


def _with_layers(url: str, layer_ids: list[str]) -> str:
    return f"{url}{'&' if '?' in url else '?'}layers={','.join(layer_ids)}"


def compose(directory: Path, style: dict, hidden: frozenset[str] = frozenset()) -> dict:
    """The composite style with every grouped layer's style layers in it, but those of `hidden` layers
    (private ones the caller may not read, twin.access)."""
    meta = style.get("metadata", {})
    composite_id = meta.get("twin:composite-source")
    composite = style["sources"].get(composite_id)
    if composite is None:
        raise ApiError(500, "broken_style", f"The composite source '{composite_id}' is not among the style's sources.")
    drawn, vector_layers, promote = [], [], {}
    for group in meta["twin:groups"]:
        group["layers"] = [layer_id for layer_id in group["layers"] if layer_id not in hidden]
        for layer_id in group["layers"]:
            path = _path(directory, layer_id)
            if path is None or path.parent.name != "layers":
                raise ApiError(500, "broken_style", f"Group '{group['title']}' lists '{layer_id}', which has no "
                               f"style file layers/{layer_id}.json.")
            part = _read(path)
            style["metadata"].setdefault("twin:layers", {})[layer_id] = part.get("metadata", {})
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
                drawn.append(layer)
    composite["tiles"] = [_with_layers(url, vector_layers) for url in composite.get("tiles", [])]
    if promote:
        composite["promoteId"] = promote
    style["layers"] = style["layers"] + sorted(drawn, key=lambda layer: DRAW_ORDER.get(layer["type"], 5))
    return style


def _absolute(url, base: str):
    return f"{base}{url}" if isinstance(url, str) and url.startswith("/") else url


def absolutize(style: dict, base: str) -> dict:
    """Server paths in sources, glyphs and sprite made absolute on `base`."""
    for source in style.get("sources", {}).values():
        if "url" in source:
            source["url"] = _absolute(source["url"], base)
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


def load(directory: Path, name: str, hidden: frozenset[str] = frozenset()) -> dict | None:
    path = _path(directory, name)
    if path is None:
        return None
    style = _read(path)
    if "twin:groups" in style.get("metadata", {}):
        style = compose(directory, style, hidden)
    return style


def names(directory: Path) -> list[str]:
    composites = sorted(p.stem for p in directory.glob("*.json"))
    layers = sorted(p.stem for p in (directory / "layers").glob("*.json") if p.stem not in composites)
    return [n for n in composites + layers if STYLE_NAME.match(n)]


@router.get("/styles")
async def list_styles(request: Request):
    directory, base = _directory(request), base_url(request)
    styles = []
    for name in names(directory):
        meta = _read(_path(directory, name))
        entry = {"id": name, "title": meta.get("name", name),
                 "links": [{"rel": "stylesheet", "type": STYLE_TYPE, "href": f"{base}/styles/{name}"}]}
        if "twin:layer" in meta.get("metadata", {}):
            entry["twin:layer"] = meta["metadata"]["twin:layer"]
        styles.append(entry)
    return JSONResponse({"styles": styles, "links": [{"rel": "self", "type": "application/json",
                                                      "href": f"{base}/styles"}]}, headers=NO_STORE)


@router.get("/styles/{name}", response_class=Response,
            responses={200: {"content": {STYLE_TYPE: {}}, "description": "A MapLibre style document"}})
async def get_style(name: str, request: Request):
    directory = _directory(request)
    style = load(directory, name, await hidden_layers(request))
    if style is None:
        raise ApiError(404, "unknown_style", f"No style '{name[:80]}'. Known styles: {', '.join(names(directory))}.",
                       where="path.name")
    return JSONResponse(absolutize(style, base_url(request)), media_type=STYLE_TYPE, headers=NO_STORE)
