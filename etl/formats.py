"""The file formats we read, and a check that a file's content is what its name says.

GDAL's own message for a mislabelled file ("not recognized as being in a supported
file format") does not tell a department what to fix; naming what the content really
is does.
"""

from pathlib import Path

TABLES = {".csv": "CSV table", ".txt": "text table", ".xlsx": "Excel workbook", ".xls": "Excel 97-2003 workbook"}
VECTORS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".shp": "Shapefile", ".zip": "zipped dataset",
           ".gpkg": "GeoPackage", ".fgb": "FlatGeobuf", ".parquet": "GeoParquet", ".geoparquet": "GeoParquet"}
RASTERS = {".tif": "GeoTIFF", ".tiff": "GeoTIFF"}
NAMES = TABLES | VECTORS | RASTERS

# leading bytes → what the content is
SIGNATURES = [
    (b"PK\x03\x04", "a ZIP archive (or an .xlsx workbook)"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"SQLite format 3\x00", "an SQLite database (GeoPackage)"),
    (b"PAR1", "a Parquet file"),
    (b"fgb\x03", "a FlatGeobuf file"),
    (b"\x00\x00\x27\x0a", "a Shapefile .shp"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"II+\x00", "a BigTIFF image"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"\xd0\xcf\x11\xe0", "an old Office document (.xls/.doc)"),
]
TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
EXPECTED = {".zip": (b"PK\x03\x04", b"PK\x05\x06"), ".xlsx": (b"PK\x03\x04",), ".gpkg": (b"SQLite format 3\x00",),
            ".parquet": (b"PAR1",), ".geoparquet": (b"PAR1",), ".fgb": (b"fgb\x03",), ".shp": (b"\x00\x00\x27\x0a",),
            ".tif": TIFF, ".tiff": TIFF, ".xls": (b"\xd0\xcf\x11\xe0",)}
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class ContentError(ValueError):
    """The file's content does not match its name, or its name says nothing we read."""


def describe(head: bytes) -> str:
    """What the leading bytes of a file look like."""
    for signature, what in SIGNATURES:
        if head.startswith(signature):
            return what
    if head.startswith(UTF16_BOMS):
        return "plain text"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not stripped:
        return "empty"
    if b"\x00" in head:
        return "binary data of an unknown kind"
    if stripped[:1] in (b"{", b"["):
        return "JSON text"
    if stripped[:1] == b"<":
        return "XML or HTML text"
    return "plain text"


def check(name: str, head: bytes) -> None:
    """Raise ContentError unless `head` (the first KiB or so) fits the format `name` promises."""
    suffix = Path(name).suffix.lower()
    if suffix not in NAMES:
        raise ContentError(f"{name!r}: unsupported file type {suffix or '(no suffix)'}; send one of "
                           f"{', '.join(sorted(NAMES))}")
    what = describe(head)
    if what == "empty":
        raise ContentError(f"{name!r} is empty")
    if suffix in EXPECTED:
        if not head.startswith(EXPECTED[suffix]):
            raise ContentError(f"{name!r} is named as a {NAMES[suffix]} but its content is {what}")
    elif suffix in (".geojson", ".json") and what != "JSON text":
        raise ContentError(f"{name!r} is named as GeoJSON but its content is {what}")
    elif suffix in (".csv", ".txt") and what not in ("plain text", "JSON text", "XML or HTML text"):
        raise ContentError(f"{name!r} is named as a {NAMES[suffix]} but its content is {what}")


def check_file(path: Path) -> None:
    with open(path, "rb") as f:
        check(path.name, f.read(4096))
