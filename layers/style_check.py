"""Checking a layer's style sent by its owner (`PUT /styles/{name}`) before it is stored and drawn for everyone.

One bad style must not break the one map: MapLibre refuses a whole style that fails its validation, and the
composite (layers.styles) pulls every layer's style layers into one document. So besides the basics (version 8,
sources, layers; unique ids of known types on sources that exist; a source-layer for vector sources), a layer's
style keeps to what the composite needs: its style layer and source ids start with the layer id (no clash with
another layer's), its vector style layers draw the layer itself (the composite's tiles carry only what it
draws), no background of its own, and its URLs are paths on this server (no outside host learns who looks at
the map). Paint and layout properties must belong to the style layer's type; their values are MapLibre's to
judge (layers.style_spec).

A problem is a 422 whose `where` points at the offending member: `body.layers.2.source`.
"""

import json
import math

from twin.errors import ApiError

MAX_STYLE_BYTES = 1 << 20
MAX_DEPTH = 48  # expressions nest a few levels; PostgreSQL's jsonb and the browser need a bound
MAX_STYLE_LAYERS = 100
SOURCE_TYPES = {"vector", "raster", "raster-dem", "geojson"}
# style layer type → the source types it draws from, and the prefixes of its paint and layout properties
TYPES = {
    "fill": ({"vector", "geojson"}, ("fill-",)),
    "line": ({"vector", "geojson"}, ("line-",)),
    "circle": ({"vector", "geojson"}, ("circle-",)),
    "symbol": ({"vector", "geojson"}, ("symbol-", "text-", "icon-")),
    "heatmap": ({"vector", "geojson"}, ("heatmap-",)),
    "fill-extrusion": ({"vector", "geojson"}, ("fill-extrusion-",)),
    "raster": ({"raster"}, ("raster-",)),
    "hillshade": ({"raster-dem"}, ("hillshade-",)),
}
LAYER_KEYS = {"id", "type", "source", "source-layer", "minzoom", "maxzoom", "filter", "layout", "paint", "metadata"}


def invalid(detail: str, where: str) -> ApiError:
    return ApiError(422, "invalid_style", detail, where=where)


def parse(body: bytes) -> object:
    """The JSON of a request body: no NaN or Infinity (not JSON, and jsonb refuses them), not nested past reason."""
    def no_constant(name: str):
        raise ValueError(f"{name} is not a JSON number")

    try:
        value = json.loads(body, parse_constant=no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ApiError(400, "invalid_json", f"The body is not a JSON document: {str(e)[:200]}", where="body") from None
    _plain(value, "body", 0)
    return value


def _plain(value, where: str, depth: int) -> None:
    """What PostgreSQL's jsonb cannot hold (NUL characters, lone surrogates) or holds badly (deep nesting)."""
    if depth > MAX_DEPTH:
        raise invalid(f"The style is nested more than {MAX_DEPTH} levels deep.", where)
    if isinstance(value, str):
        if "\x00" in value:
            raise invalid("Text in a style may not hold a NUL character (\\u0000).", where)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid("Text in a style must be valid Unicode (a lone surrogate escape is not).", where) from None
    elif isinstance(value, float) and not math.isfinite(value):
        raise invalid("Numbers in a style must be finite.", where)
    elif isinstance(value, dict):
        for key, member in value.items():
            _plain(key, where, depth + 1)
            _plain(member, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, member in enumerate(value):
            _plain(member, f"{where}.{i}", depth + 1)


def _own(name: str, identifier) -> bool:
    return isinstance(identifier, str) and (identifier == name or identifier.startswith(f"{name}-"))


def _server_path(url, base: str, where: str) -> str:
    """A URL of this server as a server path (a style read from here and sent back carries absolute ones)."""
    if isinstance(url, str) and url.startswith(f"{base}/"):
        url = url[len(base):]
    if not (isinstance(url, str) and url.startswith("/") and not url.startswith("//")):
        raise invalid("URLs in a layer's style are paths on this server (such as /collections/{layer}/tiles/"
                      "WebMercatorQuad/tilejson.json): the map loads nothing from other hosts.", where)
    return url


def _check_sources(name: str, sources, base: str) -> dict:
    if not isinstance(sources, dict) or not sources:
        raise invalid("A style has `sources`, an object of at least one source.", "body.sources")
    for source_id, source in sources.items():
        where = f"body.sources.{source_id}"
        if not _own(name, source_id):
            raise invalid(f"Source ids of layer {name}'s style are '{name}' or start with '{name}-'.", where)
        kind = source.get("type") if isinstance(source, dict) else None
        if not isinstance(kind, str) or kind not in SOURCE_TYPES:
            raise invalid(f"A source is an object whose type is one of {', '.join(sorted(SOURCE_TYPES))}.",
                          f"{where}.type")
        if "url" in source:
            source["url"] = _server_path(source["url"], base, f"{where}.url")
        if "tiles" in source:
            if not isinstance(source["tiles"], list) or not source["tiles"]:
                raise invalid("`tiles` is a list of tile URL templates.", f"{where}.tiles")
            source["tiles"] = [_server_path(u, base, f"{where}.tiles.{i}") for i, u in enumerate(source["tiles"])]
        if source["type"] == "geojson":
            if not isinstance(source.get("data"), str | dict):
                raise invalid("A GeoJSON source's `data` is GeoJSON or its URL.", f"{where}.data")
            if isinstance(source["data"], str):
                source["data"] = _server_path(source["data"], base, f"{where}.data")
        elif "url" not in source and "tiles" not in source:
            raise invalid("A tiled source names its TileJSON (`url`) or its `tiles`.", where)
    return sources


def _check_properties(layer: dict, kind: str, where: str) -> None:
    prefixes = TYPES[kind][1]
    for group in ("paint", "layout"):
        properties = layer.get(group, {})
        if not isinstance(properties, dict):
            raise invalid(f"`{group}` is an object of {kind} properties.", f"{where}.{group}")
        for key in properties:
            if not (key.startswith(prefixes) or (group == "layout" and key == "visibility")):
                raise invalid(f"'{key}' is not a {group} property of a {kind} layer (its properties start with "
                              f"{' or '.join(prefixes)}).", f"{where}.{group}.{key}")


def _check_layer(name: str, layer, index: int, sources: dict, seen: set[str]) -> None:
    where = f"body.layers.{index}"
    if not isinstance(layer, dict):
        raise invalid("A style layer is an object.", where)
    if not _own(name, layer.get("id")):
        raise invalid(f"Style layer ids of layer {name}'s style start with '{name}-' (they share the one map "
                      "with every other layer's).", f"{where}.id")
    if layer["id"] in seen:
        raise invalid(f"Style layer id '{layer['id']}' is used twice.", f"{where}.id")
    seen.add(layer["id"])
    unknown = sorted(set(layer) - LAYER_KEYS)
    if unknown:
        raise invalid(f"'{unknown[0]}' is not a member of a style layer (allowed: {', '.join(sorted(LAYER_KEYS))}).",
                      f"{where}.{unknown[0]}")
    kind = layer.get("type")
    if not isinstance(kind, str) or kind not in TYPES:
        raise invalid(f"A layer's style layer type is one of {', '.join(TYPES)}.", f"{where}.type")
    source = sources.get(layer.get("source")) if isinstance(layer.get("source"), str) else None
    if source is None:
        raise invalid(f"The style layer's source must be one of the style's sources: {', '.join(sources)}.",
                      f"{where}.source")
    if source["type"] not in TYPES[kind][0]:
        raise invalid(f"A {kind} layer draws from a {' or '.join(sorted(TYPES[kind][0]))} source, not a "
                      f"{source['type']} one.", f"{where}.source")
    if source["type"] == "vector" and layer.get("source-layer") != name:
        raise invalid(f"A style layer on a vector source names its source-layer, which is '{name}': the layer's "
                      "own features.", f"{where}.source-layer")
    for bound in ("minzoom", "maxzoom"):
        zoom = layer.get(bound, 0)
        if isinstance(zoom, bool) or not isinstance(zoom, int | float) or not 0 <= zoom <= 24:
            raise invalid(f"`{bound}` is a zoom from 0 to 24.", f"{where}.{bound}")
    if "filter" in layer and not isinstance(layer["filter"], list | bool):
        raise invalid("`filter` is an expression (a JSON array).", f"{where}.filter")
    if not isinstance(layer.get("metadata", {}), dict):
        raise invalid("`metadata` is an object.", f"{where}.metadata")
    _check_properties(layer, kind, where)


def check(name: str, style, base: str) -> dict:
    """The style to store for layer `name`: checked, its URLs as server paths, `metadata["twin:layer"]` set.
    `base` is the server's base URL as the client sees it. An ApiError (422) at the first problem."""
    if not isinstance(style, dict):
        raise invalid("A style is a JSON object (a MapLibre style document).", "body")
    if style.get("version") != 8 or isinstance(style.get("version"), bool):
        raise invalid("A MapLibre style has `\"version\": 8`.", "body.version")
    for key in ("glyphs", "sprite"):
        if key in style:
            raise invalid(f"A layer's style has no `{key}`: labels use local fonts and the one map has no sprite "
                          "(styles/README.md).", f"body.{key}")
    if not isinstance(style.get("name", ""), str):
        raise invalid("`name` is text.", "body.name")
    metadata = style.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        raise invalid("`metadata` is an object.", "body.metadata")
    if metadata.setdefault("twin:layer", name) != name:
        raise invalid(f"This is layer {name}'s style: `twin:layer` is '{name}' or absent.", "body.metadata.twin:layer")
    search = metadata.get("twin:search", [])
    if not isinstance(search, list) or not all(isinstance(f, str) for f in search):
        raise invalid("`twin:search` lists field names.", "body.metadata.twin:search")
    sources = _check_sources(name, style.get("sources"), base)
    layers = style.get("layers")
    if not isinstance(layers, list) or not layers:
        raise invalid("A style has `layers`, a list of at least one style layer.", "body.layers")
    if len(layers) > MAX_STYLE_LAYERS:
        raise invalid(f"A layer's style has at most {MAX_STYLE_LAYERS} style layers.", "body.layers")
    seen: set[str] = set()
    for index, layer in enumerate(layers):
        _check_layer(name, layer, index, sources, seen)
    return style
