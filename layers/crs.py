"""The coordinate reference systems features can be asked for (OGC API Features Part 2).

Geometries are stored in CGCS2000 lon/lat (EPSG:4490) and transformed in PostGIS on the
way out. PostGIS always keeps x = easting/longitude; a CRS whose authority axis order puts
northing/latitude first (EPSG:4326, EPSG:4490 and the Gauss-Krüger EPSG:4549) gets its
coordinates swapped with ST_FlipCoordinates, as Part 2 requires. CRS84 is lon/lat.
"""

from dataclasses import dataclass, replace

import pyproj
from sqlalchemy import func

from layers.catalog import SRID
from twin.errors import ApiError

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG_URI = "http://www.opengis.net/def/crs/EPSG/0/{}"


@dataclass(frozen=True)
class Crs:
    uri: str
    srid: int  # PostGIS SRID; CRS84 is 4326 in lon/lat order (the same datum)
    northing_first: bool
    geographic: bool

    @property
    def header(self) -> str:
        """The value of a Content-Crs (or Accept-Crs) header."""
        return f"<{self.uri}>"

    @property
    def decimals(self) -> int:
        """GeoJSON coordinate digits: about a millimetre in degrees or in metres."""
        return 8 if self.geographic else 3


def _epsg(code: int) -> Crs:
    crs = pyproj.CRS.from_epsg(code)
    return Crs(EPSG_URI.format(code), code, crs.axis_info[0].direction in ("north", "south"), crs.is_geographic)


SUPPORTED: dict[str, Crs] = {c.uri: c for c in [Crs(CRS84, 4326, False, True),
                                                   *(_epsg(code) for code in (4326, 4490, 4549, 3857))]}
DEFAULT = SUPPORTED[CRS84]
STORAGE = SUPPORTED[EPSG_URI.format(SRID)]


def _normalised(value: str) -> str:
    """The URI of the common spellings: EPSG:4326, [EPSG:4326], urn:ogc:def:crs:EPSG::4326, OGC:CRS84."""
    text = value.strip().removeprefix("[").removesuffix("]")
    upper = text.upper()
    if upper in ("OGC:CRS84", "URN:OGC:DEF:CRS:OGC:1.3:CRS84", "CRS84"):
        return CRS84
    for prefix in ("EPSG:", "URN:OGC:DEF:CRS:EPSG::", "URN:OGC:DEF:CRS:EPSG:0:"):
        if upper.startswith(prefix) and upper[len(prefix):].isdigit():
            return EPSG_URI.format(int(upper[len(prefix):]))
    return text.replace("https://", "http://", 1)


def parse(value: str | None, where: str) -> Crs:
    """The supported CRS named by `value` (a URI or a common short form); DEFAULT when absent."""
    if value is None:
        return DEFAULT
    found = SUPPORTED.get(_normalised(value))
    if found is None:
        raise ApiError(400, "unsupported_crs", f"CRS '{value[:200]}' is not supported; use one of: "
                       + ", ".join(SUPPORTED), where=where)
    return found


def of_ewkt(srid: int, where: str) -> Crs:
    """The CRS of an EWKT `SRID=n;` literal, whose coordinates are x/y whatever the authority's order."""
    return replace(parse(f"EPSG:{srid}", where), northing_first=False)


def output(geom, crs: Crs):
    """A storage geometry expression as coordinates in `crs`, axis order included."""
    out = geom if crs.srid == SRID else func.ST_Transform(geom, crs.srid)
    return func.ST_FlipCoordinates(out) if crs.northing_first else out


def envelope(minx: float, miny: float, maxx: float, maxy: float, crs: Crs):
    """An x/y box given in `crs` as a polygon in the storage CRS. A projected box's edges are
    densified first: straight in metres, they are curves in degrees."""
    box = func.ST_MakeEnvelope(minx, miny, maxx, maxy, crs.srid)
    if crs.srid == SRID:
        return box
    if not crs.geographic:
        box = func.ST_Segmentize(box, max(maxx - minx, maxy - miny) / 64 or 1.0)
    return func.ST_Transform(box, SRID)


def to_storage(geom, crs: Crs):
    """A geometry expression given in `crs` (its axis order, SRID set to crs.srid) in the storage CRS."""
    xy = func.ST_FlipCoordinates(geom) if crs.northing_first else geom
    return xy if crs.srid == SRID else func.ST_Transform(xy, SRID)
