"""A layer's default MapLibre style, made from its spec alone (issue 23: a layer registered at run time is on the
map at once, before anyone draws a style for it).

The style has the shape of the files in `styles/layers/`: its own source (the layer's TileJSON, or its raster
tiles), style layers whose ids start with the layer id, `metadata["twin:search"]` for the viewer's search. It
draws by geometry: circles for points (clusters sized by `point_count` where the tiles cluster the layer), lines
for lines, a translucent fill with an outline for polygons, and a label when the layer has a name to show. Its
colour comes from the layer id, so a layer keeps its colour from one registration, server or release to the next.
"""

import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the spec's class lives in the layers room, above this one
    from layers.catalog import LayerSpec

TMS = "WebMercatorQuad"
FONTS = ["Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC"]  # local fonts: no glyph server (styles/README.md)
# distinct, saturated enough to read on imagery and on the light background alike
PALETTE = ["#1f78b4", "#e31a1c", "#33a02c", "#ff7f00", "#6a3d9a", "#b15928", "#d95f02", "#1b9e77",
           "#7570b3", "#e7298a", "#66a61e", "#a6761d"]
CLUSTER_FILTER = ["has", "point_count"]
SINGLE_FILTER = ["!", ["has", "point_count"]]
LABEL_FIELDS = ("name", "title", "code")  # the first of these a layer has is its label
MAX_SEARCH_FIELDS = 3
TOP_ZOOM = 22  # a spec's maxzoom at this value means "no upper bound"


def drawn(spec: "LayerSpec") -> bool:
    """Whether the map draws the layer at all (series readings have no geometry of their own)."""
    return spec.kind == "raster" or spec.geometry is not None


def colour(spec: "LayerSpec") -> str:
    return PALETTE[zlib.crc32(spec.id.encode()) % len(PALETTE)]


def _text_fields(spec: "LayerSpec") -> list[str]:
    return [f.name for f in spec.fields if f.type == "text"]


def _label_field(spec: "LayerSpec") -> str | None:
    texts = _text_fields(spec)
    return next((name for name in LABEL_FIELDS if name in texts), None)


def search_fields(spec: "LayerSpec") -> list[str]:
    """The text fields the viewer searches: the key's, then the usual names, then the others, three at most."""
    texts = _text_fields(spec)
    ordered = [k for k in spec.key if k in texts] + [n for n in LABEL_FIELDS if n in texts] + texts
    return list(dict.fromkeys(ordered))[:MAX_SEARCH_FIELDS]


def _zooms(spec: "LayerSpec", minzoom: int = 0) -> dict:
    """A style layer's zoom range: the spec's, shown up to and including its maxzoom."""
    zooms = {"minzoom": max(spec.minzoom, minzoom)} if max(spec.minzoom, minzoom) else {}
    if spec.maxzoom < TOP_ZOOM:
        zooms["maxzoom"] = spec.maxzoom + 1
    return zooms


def _label(spec: "LayerSpec", colour_: str, minzoom: int, along_lines: bool = False) -> list[dict]:
    field = _label_field(spec)
    if field is None:
        return []
    layout = {"text-field": ["get", field], "text-font": FONTS, "text-size": 11}
    layout |= {"symbol-placement": "line"} if along_lines else {"text-offset": [0, 1], "text-anchor": "top"}
    return [{"id": f"{spec.id}-label", "type": "symbol", "source": spec.id, "source-layer": spec.id,
             **_zooms(spec, minzoom), "layout": layout,
             "paint": {"text-color": colour_, "text-halo-color": "#ffffff", "text-halo-width": 1.2,
                       "text-opacity": 1}}]


def _points(spec: "LayerSpec", colour_: str) -> list[dict]:
    on = {"source": spec.id, "source-layer": spec.id, **_zooms(spec)}
    # the tiles cluster a layer that asks for it, of single points only (tiles.sources.clusters)
    clustered = spec.cluster and spec.geometry == "Point"
    layers = [
        {"id": f"{spec.id}-cluster", "type": "circle", **on, "filter": CLUSTER_FILTER,
         "metadata": {"twin:legend": {"circle-color": f"{spec.title.zh}聚合（个数）"}},
         "paint": {"circle-color": colour_, "circle-opacity": 0.7, "circle-stroke-color": "#ffffff",
                   "circle-stroke-width": 1.5, "circle-stroke-opacity": 0.9,
                   "circle-radius": ["interpolate", ["linear"], ["get", "point_count"], 2, 7, 100, 11, 1000, 16,
                                     10000, 22]}},
        {"id": f"{spec.id}-cluster-count", "type": "symbol", **on, "filter": CLUSTER_FILTER,
         "metadata": {"twin:legend": False},
         "layout": {"text-field": ["to-string", ["get", "point_count"]], "text-font": FONTS, "text-size": 10,
                    "text-allow-overlap": True},
         "paint": {"text-color": "#ffffff", "text-opacity": 1}},
    ] if clustered else []
    point = {"id": f"{spec.id}-point", "type": "circle", **on,
             "paint": {"circle-color": colour_, "circle-opacity": 0.9, "circle-stroke-color": "#ffffff",
                       "circle-stroke-width": 1, "circle-stroke-opacity": 1,
                       "circle-radius": ["interpolate", ["linear"], ["zoom"], 10, 3, 15, 5, 18, 8]}}
    labels = _label(spec, colour_, 15)
    if clustered:
        point["filter"] = SINGLE_FILTER
        for label in labels:
            label["filter"] = SINGLE_FILTER
    return layers + [point] + labels


def _lines(spec: "LayerSpec", colour_: str) -> list[dict]:
    return [{"id": f"{spec.id}-line", "type": "line", "source": spec.id, "source-layer": spec.id, **_zooms(spec),
             "layout": {"line-join": "round", "line-cap": "round"},
             "paint": {"line-color": colour_, "line-opacity": 0.9,
                       "line-width": ["interpolate", ["linear"], ["zoom"], 10, 1, 16, 3]}},
            *_label(spec, colour_, 13, along_lines=True)]


def _polygons(spec: "LayerSpec", colour_: str) -> list[dict]:
    on = {"source": spec.id, "source-layer": spec.id, **_zooms(spec)}
    return [{"id": f"{spec.id}-fill", "type": "fill", **on,
             "paint": {"fill-color": colour_, "fill-opacity": 0.25}},
            {"id": f"{spec.id}-outline", "type": "line", **on, "metadata": {"twin:legend": False},
             "paint": {"line-color": colour_, "line-opacity": 0.9,
                       "line-width": ["interpolate", ["linear"], ["zoom"], 10, 0.8, 16, 2]}},
            *_label(spec, colour_, 12)]


def _raster(spec: "LayerSpec") -> dict:
    return {"sources": {spec.id: {"type": "raster", "tileSize": 256, "minzoom": spec.minzoom,
                                  "maxzoom": spec.maxzoom,
                                  "tiles": [f"/raster/{spec.id}/tiles/{TMS}/{{z}}/{{x}}/{{y}}.png"]}},
            "layers": [{"id": f"{spec.id}-raster", "type": "raster", "source": spec.id,
                        **({"minzoom": spec.minzoom} if spec.minzoom else {}),  # overzoomed past the source's
                        "paint": {"raster-opacity": 1}}]}


DRAWERS = {"Point": _points, "MultiPoint": _points, "MultiLineString": _lines, "MultiPolygon": _polygons}


def default_style(spec: "LayerSpec") -> dict:
    """The layer's default style (URLs are server paths, as in the files). A layer without geometry (a series)
    is not drawn: ValueError."""
    if not drawn(spec):
        raise ValueError(f"layer {spec.id} has no geometry to draw (kind {spec.kind}); it has no style")
    style = {"version": 8, "name": spec.title.zh,
             "metadata": {"twin:layer": spec.id, "twin:search": search_fields(spec)}}
    if spec.kind == "raster":
        del style["metadata"]["twin:search"]
        return style | _raster(spec)
    source = {"type": "vector", "url": f"/collections/{spec.id}/tiles/{TMS}/tilejson.json"}
    return style | {"sources": {spec.id: source}, "layers": DRAWERS[spec.geometry](spec, colour(spec))}
