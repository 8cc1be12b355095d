"""Reading the files departments really send, with GDAL (pyogrio) and pandas.

Returns raw attribute values (as text where the format has no types) and, separately,
the geometries with the CRS the file declares, so nothing is interpreted before
validation can say what was wrong with it. A table's coordinate columns stay among
the attributes (the quarantine shows them as sent); rows whose coordinates cannot be
read are listed with the reason.

Vector files (GeoPackage, FlatGeobuf, Shapefile, GeoJSON, GeoParquet) are read in batches of
rows through Arrow (`opened(...).pieces(n)`), so a load holds one batch, not the file; a
cheap pass over chosen columns without geometry (`.values(...)`) serves checks that need the
whole file, such as duplicate keys. CSV and XLSX tables are read in one piece.
"""

import codecs
import contextlib
import csv
import io
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pyproj
import shapely

from etl import archive, formats

LON_HEADERS = ["经度", "东经", "lon", "lng", "long", "longitude", "x", "x坐标", "横坐标", "point_x", "坐标x", "easting"]
LAT_HEADERS = ["纬度", "北纬", "lat", "latitude", "y", "y坐标", "纵坐标", "point_y", "坐标y", "northing"]
WKT_HEADERS = ["wkt", "geometry", "geom", "the_geom", "shape", "几何", "空间信息"]
ENCODING_PROBE = 1 << 20
BATCH = 100_000  # rows read (and then validated) at a time


class ReadError(ValueError):
    """The file cannot be read as a dataset; the message says why."""


@dataclass
class Dataset:
    attributes: pd.DataFrame
    geometry: pd.Series | None  # shapely geometries, same index, or None for a table without coordinates
    crs: str | None  # as declared by the file (WKT or authority code), None when it says nothing
    file_name: str
    coordinates: list[str] = field(default_factory=list)  # a table's columns the geometry was built from
    problems: dict = field(default_factory=dict)  # row label -> why its geometry could not be read
    offset: int = 0  # rows of the file before this piece's first row (a piece of a file read in batches)


def detect_encoding(data: bytes | Path) -> str:
    """UTF-16 by its BOM, UTF-8 (with or without BOM) when it decodes as such, otherwise GB18030
    (a superset of GBK and GB2312, what Chinese Windows writes)."""
    if isinstance(data, Path):
        with open(data, "rb") as f:
            blocks = iter(lambda: f.read(ENCODING_PROBE), b"")
            return _detect(blocks)
    return _detect([data])


def _detect(blocks) -> str:
    decoder = codecs.getincrementaldecoder("utf-8")()
    for n, block in enumerate(blocks):
        if n == 0 and block.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        try:
            decoder.decode(block, final=False)
        except UnicodeDecodeError:
            return "gb18030"
    return "utf-8-sig"


def header_key(name) -> str:
    """A header as compared: lower case, without BOM, spaces, and a trailing unit or note in brackets."""
    key = str(name).strip().lstrip("\ufeff").lower()
    return re.sub(r"\s*[(（\[【][^)）\]】]*[)）\]】]\s*$", "", key).strip()


def _find_column(columns, names: list[str]) -> str | None:
    keys = {}
    for c in columns:
        keys.setdefault(header_key(c), c)
    return next((keys[n] for n in names if n in keys), None)


def _delimiter(text: str) -> str:
    header = text.split("\n", 1)[0]
    return max([",", "\t", ";", "|"], key=header.count)


def _read_text_table(path: Path) -> pd.DataFrame:
    data = path.read_bytes()
    encoding = detect_encoding(data)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise ReadError(f"{path.name} is neither UTF-8 nor GBK/GB18030 text ({e}); save it as UTF-8 CSV") from e
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise ReadError(f"{path.name} is empty")
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, sep=_delimiter(text),
                           skipinitialspace=True, quoting=csv.QUOTE_MINIMAL)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ReadError(f"{path.name} is not a readable table: {e}") from e


def _read_workbook(path: Path, sheet: str | None) -> pd.DataFrame:
    if path.suffix.lower() == ".xls":
        raise ReadError(f"{path.name} is an Excel 97-2003 workbook; save it as .xlsx or CSV (UTF-8)")
    try:
        book = pd.ExcelFile(path)
    except Exception as e:  # openpyxl raises many types for a file that is not a workbook
        raise ReadError(f"{path.name} is not a readable Excel workbook: {e}") from e
    with book:
        if sheet is not None and sheet not in book.sheet_names:
            raise ReadError(f"{path.name} has no sheet {sheet!r}; its sheets: {', '.join(book.sheet_names)}")
        frame = pd.read_excel(book, sheet_name=sheet if sheet is not None else 0, dtype=str)
    return frame.fillna("")


def _numbers(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Numeric values (NaN where unreadable) and which cells hold text at all."""
    text = column.astype("string").str.strip().fillna("")
    return pd.to_numeric(text, errors="coerce"), text.ne("")


def _points(frame: pd.DataFrame, lon: str, lat: str) -> tuple[pd.Series, dict]:
    x, x_given = _numbers(frame[lon])
    y, y_given = _numbers(frame[lat])
    points = shapely.points(x.to_numpy(dtype=float), y.to_numpy(dtype=float))
    broken = (x.isna() | y.isna()).to_numpy()
    points[broken] = None
    problems = {}
    for label in frame.index[broken]:
        if not x_given[label] and not y_given[label]:
            problems[label] = f"no coordinates: {lon} and {lat} are empty"
        else:
            column = next(c for c, v, given in ((lon, x, x_given), (lat, y, y_given)) if pd.isna(v[label]))
            value = frame.at[label, column]
            problems[label] = (f"coordinate {column} is empty" if not str(value).strip()
                               else f"coordinate {column}: cannot read {value!r} as a number")
    return pd.Series(points, index=frame.index, dtype=object), problems


def _shapes(frame: pd.DataFrame, column: str) -> tuple[pd.Series, dict]:
    text = frame[column].astype("string").str.strip().fillna("")
    shapes = shapely.from_wkt(text.mask(text.eq("")).to_numpy(dtype=object), on_invalid="ignore")
    problems = {label: (f"geometry column {column} is empty" if not text[label]
                        else f"geometry column {column}: cannot read {text[label][:60]!r} as WKT")
                for label in frame.index[pd.isna(shapes)]}
    return pd.Series(shapes, index=frame.index, dtype=object), problems


def _read_table(path: Path, sheet: str | None) -> Dataset:
    suffix = path.suffix.lower()
    frame = _read_workbook(path, sheet) if suffix in (".xlsx", ".xls") else _read_text_table(path)
    frame.columns = [str(c).strip().lstrip("\ufeff") for c in frame.columns]
    lon, lat = _find_column(frame.columns, LON_HEADERS), _find_column(frame.columns, LAT_HEADERS)
    wkt = _find_column(frame.columns, WKT_HEADERS)
    if lon and lat:
        geometry, problems = _points(frame, lon, lat)
        return Dataset(frame, geometry, None, path.name, [lon, lat], problems)
    if wkt:
        geometry, problems = _shapes(frame, wkt)
        return Dataset(frame, geometry, None, path.name, [wkt], problems)
    return Dataset(frame, None, None, path.name)


def _shapefile_encoding(shp: Path) -> str | None:
    """The attribute encoding of a Shapefile without a .cpg whose DBF declares no code page."""
    dbf, cpg = shp.with_suffix(".dbf"), shp.with_suffix(".cpg")
    if cpg.exists() or not dbf.exists():
        return None
    with open(dbf, "rb") as f:
        language_driver = f.read(32)[29:30]
    if language_driver not in (b"", b"\x00"):
        return None  # GDAL honours the DBF's own code page mark
    return "UTF-8" if detect_encoding(dbf).startswith("utf-8") else "GB18030"


class Whole:
    """A dataset already in memory, handed out in pieces of its rows."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.file_name, self.crs = dataset.file_name, dataset.crs
        self.columns = [str(c) for c in dataset.attributes.columns]
        self.coordinates = dataset.coordinates
        self.has_geometry = dataset.geometry is not None

    def pieces(self, size: int = BATCH) -> Iterator[Dataset]:
        d = self.dataset
        for start in range(0, max(len(d.attributes), 1), size):
            rows = slice(start, start + size)
            yield Dataset(d.attributes.iloc[rows], None if d.geometry is None else d.geometry.iloc[rows], d.crs,
                          d.file_name, d.coordinates, d.problems, d.offset + start)

    def values(self, columns: list[str], size: int = BATCH) -> Iterator[pd.DataFrame]:
        yield self.dataset.attributes[columns]

    def whole(self) -> Dataset:
        return self.dataset


class Batches:
    """A vector file read in batches of rows through Arrow: a piece's row labels are its rows' places in the file."""

    coordinates: list[str] = []  # geometries are the file's own, not built from attribute columns

    def __init__(self, path: Path, name: str, layer: str | None, encoding: str | None):
        self.path, self.file_name, self.layer, self.encoding = path, name, layer, encoding
        with self._arrow(None, read_geometry=False) as (meta, _):
            self.columns = [str(c) for c in meta["fields"]]
            self.geometry_name = meta["geometry_name"] or "wkb_geometry"
            self.has_geometry = meta["geometry_type"] is not None
            self.crs = pyproj.CRS(meta["crs"]).to_wkt() if meta["crs"] else None

    @contextlib.contextmanager
    def _arrow(self, columns: list[str] | None, size: int = BATCH, read_geometry: bool = True):
        # datetimes as the file writes them: validation reads the text (offsets included)
        with pyogrio.raw.open_arrow(self.path, layer=self.layer, encoding=self.encoding, columns=columns,
                                    read_geometry=read_geometry, batch_size=size, use_pyarrow=True,
                                    datetime_as_string=True) as opened:
            yield opened

    def _batches(self, columns: list[str] | None, size: int, read_geometry: bool) -> Iterator[pa.RecordBatch]:
        try:
            with self._arrow(columns, size, read_geometry) as (_, reader):
                yield from reader
        except Exception as e:  # GDAL's and pyarrow's errors for a file broken past its header
            raise ReadError(f"{self.file_name} cannot be read to its end: {e}") from e

    def pieces(self, size: int = BATCH) -> Iterator[Dataset]:
        offset = 0
        for batch in self._batches(None, size, self.has_geometry):
            attributes, geometry = _split(batch, self.geometry_name if self.has_geometry else None, offset)
            yield Dataset(attributes, geometry, self.crs, self.file_name, offset=offset)
            offset += len(attributes)
        if not offset:  # no features: one empty piece with the file's columns
            yield Dataset(pd.DataFrame(columns=self.columns), pd.Series(dtype=object) if self.has_geometry else None,
                          self.crs, self.file_name)

    def values(self, columns: list[str], size: int = BATCH) -> Iterator[pd.DataFrame]:
        offset = 0
        for batch in self._batches(columns, size, False):
            frame, _ = _split(batch, None, offset)
            offset += len(frame)
            yield frame

    def whole(self) -> Dataset:
        pieces = list(self.pieces())
        geometry = pd.concat([p.geometry for p in pieces]) if self.has_geometry else None
        return Dataset(pd.concat([p.attributes for p in pieces]), geometry, self.crs, self.file_name)


class GeoParquet(Batches):
    """A GeoParquet file whose geometries are WKB, read in batches of rows with pyarrow."""

    def __init__(self, path: Path, name: str, geo: dict, hidden: list[str]):
        self.path, self.file_name = path, name
        self.geometry_name = geo["primary_column"]
        self.columns = [c for c in pq.ParquetFile(path).schema_arrow.names if c not in [self.geometry_name, *hidden]]
        self.has_geometry = True
        crs = geo["columns"][self.geometry_name].get("crs", "OGC:CRS84")  # the GeoParquet default
        self.crs = None if crs is None else (pyproj.CRS.from_json_dict(crs) if isinstance(crs, dict)
                                             else pyproj.CRS(crs)).to_wkt()

    def _batches(self, columns: list[str] | None, size: int, read_geometry: bool) -> Iterator[pa.RecordBatch]:
        wanted = (columns or self.columns) + ([self.geometry_name] if read_geometry else [])
        try:
            yield from pq.ParquetFile(self.path).iter_batches(batch_size=size, columns=wanted)
        except Exception as e:
            raise ReadError(f"{self.file_name} cannot be read to its end: {e}") from e


def _split(batch: pa.RecordBatch, geometry_name: str | None, offset: int) -> tuple[pd.DataFrame, pd.Series | None]:
    """A batch's attributes as pandas values and its geometries as shapely ones, labelled by row in the file."""
    index = pd.RangeIndex(offset, offset + batch.num_rows)
    if geometry_name is None:
        return batch.to_pandas().set_axis(index), None
    wkb = batch.column(geometry_name)
    if isinstance(wkb, pa.ExtensionArray):
        wkb = wkb.storage
    attributes = batch.drop_columns([geometry_name]).to_pandas().set_axis(index)
    geometry = shapely.from_wkb(wkb.to_numpy(zero_copy_only=False), on_invalid="ignore")
    return attributes, pd.Series(geometry, index=index, dtype=object)


def _geoparquet(path: Path, name: str) -> Batches | Whole:
    metadata = pq.ParquetFile(path).schema_arrow.metadata or {}
    geo = json.loads(metadata.get(b"geo", b"{}"))
    primary = geo.get("primary_column")
    if primary and geo.get("columns", {}).get(primary, {}).get("encoding", "").upper() == "WKB":
        index = json.loads(metadata.get(b"pandas", b"{}")).get("index_columns", [])  # a saved pandas index
        return GeoParquet(path, name, geo, [c for c in index if isinstance(c, str)])
    frame = gpd.read_parquet(path)  # geometries in GeoArrow's own encodings: geopandas decodes them, in one piece
    crs = frame.crs.to_wkt() if frame.crs is not None else None
    geometry = pd.Series(frame.geometry.to_numpy(), index=frame.index, dtype=object)
    return Whole(Dataset(pd.DataFrame(frame.drop(columns=frame.geometry.name)), geometry, crs, name))


def _open_vector(path: Path, name: str, layer: str | None) -> Batches | Whole:
    suffix = path.suffix.lower()
    encoding = _shapefile_encoding(path) if suffix == ".shp" else None
    try:
        if suffix in (".parquet", ".geoparquet") and "Parquet" not in pyogrio.list_drivers():
            return _geoparquet(path, name)
        layers = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
        if layer is None and len(layers) > 1:
            raise ReadError(f"{name} has several layers ({', '.join(layers)}); choose one with "
                            "--source-layer (HTTP: source_layer)")
        if layer is not None and layer not in layers:
            if len(layers) > 1 or suffix == ".gpkg":
                raise ReadError(f"{name} has no layer {layer!r}; its layers: {', '.join(layers)}")
            layer = None
        return Batches(path, name, layer, encoding)
    except ReadError:
        raise
    except Exception as e:  # GDAL's and pyarrow's errors for a file that is not what its name says
        hint = " (a Shapefile needs its .shx and .dbf beside it: zip them together)" if suffix == ".shp" else ""
        raise ReadError(f"{name} cannot be read as a {formats.NAMES.get(suffix, 'vector dataset')}: {e}{hint}") from e


@contextlib.contextmanager
def opened(path: Path, layer: str | None = None) -> Iterator[Batches | Whole]:
    """Open any supported file: GeoJSON, (zipped) Shapefile, GeoPackage, FlatGeobuf, GeoParquet, CSV, XLSX.
    `layer` chooses a layer of a GeoPackage, a dataset inside a zip, or a workbook's sheet. Vector files are
    read batch by batch while the context lasts (a zip's dataset stays extracted until then)."""
    path = Path(path)
    if not path.is_file():
        raise ReadError(f"{path} does not exist or is not a file")
    try:
        formats.check_file(path)
    except formats.ContentError as e:
        raise ReadError(str(e)) from e
    suffix = path.suffix.lower()
    if suffix in formats.TABLES:
        yield Whole(_read_table(path, layer))
        return
    if suffix in formats.RASTERS:
        raise ReadError(f"{path.name} is a raster; load it with: twin etl raster {path.name} --layer imagery")
    if suffix != ".zip":
        yield _open_vector(path, path.name, layer)
        return
    with tempfile.TemporaryDirectory(prefix="twin-unzip-") as tmp:
        try:
            inner = archive.extract(path, layer, Path(tmp))
        except archive.ArchiveError as e:
            raise ReadError(str(e)) from e
        yield _open_vector(inner, path.name, layer)


def read(path: Path, layer: str | None = None) -> Dataset:
    """Read a whole file into memory (see `opened`)."""
    with opened(path, layer) as dataset:
        return dataset.whole()
