"""Reading the files departments really send, with GDAL (pyogrio) and pandas.

Returns raw attribute values (as text where the format has no types) and, separately,
the geometries with the CRS the file declares, so nothing is interpreted before
validation can say what was wrong with it.
"""

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyogrio
import shapely

TABLE_SUFFIXES = {".csv", ".txt", ".xlsx", ".xls"}
LON_HEADERS = ["经度", "东经", "lon", "lng", "long", "longitude", "x", "x坐标", "横坐标", "point_x", "坐标x"]
LAT_HEADERS = ["纬度", "北纬", "lat", "latitude", "y", "y坐标", "纵坐标", "point_y", "坐标y"]


class ReadError(ValueError):
    """The file cannot be read as a dataset; the message says why."""


@dataclass
class Dataset:
    attributes: pd.DataFrame
    geometry: pd.Series | None  # shapely geometries, same index, or None for a table without coordinates
    crs: str | None  # as declared by the file (WKT or authority code), None when it says nothing
    source: str


def detect_encoding(data: bytes) -> str:
    """UTF-8 (with or without BOM) when it decodes as such, otherwise GB18030 (a superset of GBK)."""
    try:
        data.decode("utf-8")
        return "utf-8-sig"
    except UnicodeDecodeError:
        return "gb18030"


def _header_key(name: str) -> str:
    return re.sub(r"[\s_()（）°度]+$", "", str(name).strip().lower().lstrip("\ufeff"))


def _find_column(columns, names: list[str]) -> str | None:
    keys = {_header_key(c): c for c in columns}
    return next((keys[n] for n in names if n in keys), None)


def _read_table(path: Path) -> Dataset:
    if path.suffix.lower() in (".xlsx", ".xls"):
        try:
            frame = pd.read_excel(path, dtype=str)
        except Exception as e:  # openpyxl raises many types for a file that is not a workbook
            raise ReadError(f"{path.name} is not a readable Excel workbook: {e}") from e
    else:
        data = path.read_bytes()
        frame = pd.read_csv(io.BytesIO(data), dtype=str, encoding=detect_encoding(data), keep_default_na=False)
    frame.columns = [str(c).strip().lstrip("\ufeff") for c in frame.columns]
    lon, lat = _find_column(frame.columns, LON_HEADERS), _find_column(frame.columns, LAT_HEADERS)
    geometry = None
    if lon and lat:
        x = pd.to_numeric(frame[lon].str.strip(), errors="coerce")
        y = pd.to_numeric(frame[lat].str.strip(), errors="coerce")
        points = shapely.points(x.to_numpy(), y.to_numpy())
        points[x.isna().to_numpy() | y.isna().to_numpy()] = None
        geometry = pd.Series(points, index=frame.index, dtype=object)
        frame = frame.drop(columns=[lon, lat])
    return Dataset(frame, geometry, None, path.name)


def _zip_member(path: Path, layer: str | None) -> tuple[str, str | None]:
    """The /vsizip/ path of the dataset inside a zip, and the encoding of its attribute table."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        for name in names:
            if name.startswith("/") or ".." in Path(name).parts:
                raise ReadError(f"{path.name} contains an unsafe path {name!r}; refusing to read it")
        shapefiles = [n for n in names if n.lower().endswith(".shp")]
        others = [n for n in names if Path(n).suffix.lower() in (".gpkg", ".geojson", ".json", ".fgb", ".kml")]
        if layer:
            shapefiles = [n for n in shapefiles if Path(n).stem == layer] or shapefiles
        if not shapefiles and not others:
            raise ReadError(f"{path.name} holds no Shapefile or other vector dataset (found: {', '.join(names[:10])})")
        member = (shapefiles or others)[0]
        encoding = None
        if member in shapefiles:
            stem = member[:-4]
            has_cpg = any(n.lower() == f"{stem.lower()}.cpg" for n in names)
            dbf = next((n for n in names if n.lower() == f"{stem.lower()}.dbf"), None)
            if dbf and not has_cpg:
                encoding = detect_encoding(archive.read(dbf))
    return f"/vsizip/{path}/{member}", encoding


def read(path: Path, layer: str | None = None) -> Dataset:
    """Read any supported file: GeoJSON, (zipped) Shapefile, GeoPackage, FlatGeobuf, GeoParquet, CSV, XLSX."""
    path = Path(path)
    if not path.exists():
        raise ReadError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return _read_table(path)
    source, encoding = str(path), None
    if suffix == ".zip":
        source, encoding = _zip_member(path, layer)
        layer = None
    elif suffix == ".shp":
        cpg = path.with_suffix(".cpg")
        dbf = path.with_suffix(".dbf")
        if not cpg.exists() and dbf.exists():
            encoding = detect_encoding(dbf.read_bytes())
    elif suffix == ".gpkg" and layer is None:
        layers = pyogrio.list_layers(path)
        if len(layers) > 1:
            raise ReadError(f"{path.name} has several layers ({', '.join(layers[:, 0])}); choose one with --layer")
    try:
        frame = pyogrio.read_dataframe(source, layer=layer, encoding=encoding)
    except Exception as e:  # GDAL's errors for a file that is not what its name says
        raise ReadError(f"{path.name} cannot be read as a vector dataset: {e}") from e
    crs = frame.crs.to_wkt() if frame.crs is not None else None
    geometry = pd.Series(frame.geometry.to_numpy(), index=frame.index, dtype=object)
    attributes = pd.DataFrame(frame.drop(columns=frame.geometry.name))
    return Dataset(attributes, geometry, crs, path.name)
