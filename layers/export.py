"""Downloads: a layer, or the part of it a bbox, datetime, filter or moment picks, as one file.

`GET /collections/{layer}/export?f=gpkg|parquet|csv|geojson` takes the items' parameters (bbox,
bbox-crs, datetime, filter, filter-lang, filter-crs, properties, as_of, crs) and answers with every
matching feature in fid order, without pages.

Rows leave the database through a server-side cursor, CHUNK at a time, so the server holds one
chunk whatever the layer's size. GeoJSON and CSV are sent as each chunk is formatted (chunked
transfer). A GeoPackage or GeoParquet file is only complete once its indexes or footer are written,
so its chunks go as Arrow batches into a temporary file (GDAL through pyogrio; pyarrow's
ParquetWriter) that is sent, then deleted; the database connection is free before the first byte leaves.

GeoJSON coordinates follow the items (the CRS's axis order, OGC API Features Part 2); the files
and CSV keep x = east as GIS files do, and the files name their CRS (GeoPackage srs, GeoParquet
`geo` metadata). CSV starts with a UTF-8 byte-order mark so spreadsheet programs read the Chinese text.
"""

import asyncio
import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Literal

import anyio
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pyproj
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from layers import crs as crs_
from layers import params
from layers.catalog import LayerSpec
from layers.features import Selection, download, xy_names
from layers.filters import Filter
from layers.items import GEOJSON, feature_layer
from layers.statements import fetch_one
from twin.errors import ApiError

router = APIRouter(tags=["features"])

CHUNK = 5_000
MAX_EXPORTS = 4  # downloads at once per server process; each holds a database connection while it runs
RETRY_AFTER_S = 30
MEDIA = {"geojson": GEOJSON, "csv": "text/csv; charset=utf-8", "gpkg": "application/geopackage+sqlite3",
         "parquet": "application/vnd.apache.parquet"}
ARROW_TYPES = {"text": pa.string(), "integer": pa.int32(), "real": pa.float64(), "boolean": pa.bool_(),
               "date": pa.date32(), "timestamptz": pa.timestamp("us", tz="UTC")}
_running = asyncio.Semaphore(MAX_EXPORTS)


@asynccontextmanager
async def _slot():
    """One of the MAX_EXPORTS download slots, or a 503 at once rather than a queue of waiting clients."""
    if _running.locked():
        raise ApiError(503, "busy", f"{MAX_EXPORTS} downloads are running; retry shortly.",
                       headers={"Retry-After": str(RETRY_AFTER_S)})
    async with _running:
        yield


async def _chunks(request: Request, statement) -> AsyncIterator[list]:
    """The statement's rows, CHUNK at a time, from a server-side cursor. The first step checks the
    statement on a first row, so a value the database refuses is a 4xx before any byte is sent."""
    async with _slot(), request.app.state.read_engine.connect() as conn:
        await fetch_one(conn, statement.limit(1))
        yield []
        result = await conn.stream(statement.execution_options(yield_per=CHUNK))
        async for part in result.partitions():
            yield part


async def _checked(request: Request, statement) -> AsyncIterator[list]:
    chunks = _chunks(request, statement)
    await anext(chunks)
    return chunks


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def _csv_header(spec: LayerSpec, names: list[str], out: crs_.Crs, xy: bool) -> list[str]:
    header = ["fid", *names]
    if spec.geometry:
        header += list(xy_names(out)) if xy else ["WKT"]
    return header


async def _csv_body(chunks, header: list[str], decimals: int, xy: bool) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    yield "\ufeff".encode() + buffer.getvalue().encode()
    async with _closing(chunks):
        async for part in chunks:
            buffer.seek(0)
            buffer.truncate()
            for row in part:
                values = [_csv_value(v) for v in row]
                if xy:
                    values[-2:] = [v if v == "" else round(v, decimals) for v in values[-2:]]
                writer.writerow(values)
            yield buffer.getvalue().encode()


async def _geojson_body(chunks) -> AsyncIterator[bytes]:
    yield b'{"type":"FeatureCollection","features":['
    separator = b""
    async with _closing(chunks):
        async for part in chunks:
            yield separator + ",".join(row.feature for row in part).encode()
            separator = b","
    yield b"]}"


@asynccontextmanager
async def _closing(chunks):
    """Close the cursor (and free the connection and slot) also when the client goes away mid-download."""
    try:
        yield
    finally:
        await chunks.aclose()


def _arrow_schema(spec: LayerSpec, names: list[str]) -> pa.Schema:
    fields = [pa.field("fid", pa.int64())] + [pa.field(n, ARROW_TYPES[spec.field(n).type]) for n in names]
    if spec.geometry:
        fields.append(pa.field("geometry", pa.binary()))
    return pa.schema(fields)


def _file_crs(out: crs_.Crs) -> pyproj.CRS:
    return pyproj.CRS.from_user_input("OGC:CRS84" if out.uri == crs_.CRS84 else f"EPSG:{out.srid}")


def _geoparquet_schema(schema: pa.Schema, spec: LayerSpec, out: crs_.Crs) -> pa.Schema:
    if not spec.geometry:
        return schema
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": [spec.geometry],
                                    "crs": _file_crs(out).to_json_dict()}}}
    return schema.with_metadata({b"geo": json.dumps(geo).encode()})


def _write_gpkg(batches: pa.RecordBatchReader, path: str, spec: LayerSpec, out: crs_.Crs) -> None:
    geometry = {"geometry_name": "geometry", "geometry_type": spec.geometry, "crs": _file_crs(out).to_wkt()} \
        if spec.geometry else {}
    pyogrio.write_arrow(batches, path, layer=spec.id, driver="GPKG", **geometry)


def _write_parquet(batches: pa.RecordBatchReader, path: str, spec: LayerSpec, out: crs_.Crs) -> None:
    with pq.ParquetWriter(path, _geoparquet_schema(batches.schema, spec, out), compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(batch)


async def _file(chunks, schema: pa.Schema, write: Callable[[pa.RecordBatchReader, str], None], path: str) -> None:
    """Run `write` in a worker thread on the chunks as Arrow batches, each fetched on the event loop."""
    async def next_chunk():
        return await anext(chunks, None)

    def batches() -> Iterator[pa.RecordBatch]:
        while (part := anyio.from_thread.run(next_chunk)) is not None:
            columns = list(zip(*part))
            yield pa.record_batch([pa.array(c, type=f.type) for c, f in zip(columns, schema)], schema=schema)

    async with _closing(chunks):
        await anyio.to_thread.run_sync(write, pa.RecordBatchReader.from_batches(schema, batches()), path)


@router.get("/collections/{layer}/export", response_class=Response,
            responses={200: {"content": {media: {} for media in MEDIA.values()}, "description": "The download"}})
async def export(
    request: Request,
    spec: LayerSpec = Depends(feature_layer),
    f: Literal["gpkg", "parquet", "csv", "geojson"] = Query(
        ..., description="gpkg (GeoPackage), parquet (GeoParquet), csv or geojson"),
    geometry: Literal["wkt", "xy"] = Query("wkt", description="CSV only: the geometry as one WKT column, or "
                                                               "(points) as lon/lat (x/y when projected) columns"),
    box: params.BBox | None = Depends(params.bbox),
    out: crs_.Crs = Depends(params.output_crs),
    moment: params.Period | None = Depends(params.period),
    cql: Filter | None = Depends(params.cql_filter),
    wanted: params.Properties = Depends(params.properties),
    as_of: datetime | None = Depends(params.as_of),
):
    """Every matching feature as one file, streamed: the items' parameters without pages."""
    xy = f == "csv" and geometry == "xy"
    if xy and spec.geometry != "Point":
        raise ApiError(400, "invalid_parameter", f"geometry=xy needs a point layer; '{spec.id}' holds "
                       f"{spec.geometry or 'no geometries'}. Use geometry=wkt.", where="query.geometry")
    selection = Selection(spec, wanted.fields(spec), out, box, moment, cql, as_of)
    names = selection.names
    statement = download(selection, "xy" if xy else {"geojson": "geojson", "csv": "wkt"}.get(f, "wkb"))
    headers = {"Content-Disposition": f'attachment; filename="{spec.id}.{f}"', "Content-Crs": out.header}
    chunks = await _checked(request, statement)
    if f == "geojson":
        return StreamingResponse(_geojson_body(chunks), media_type=MEDIA[f], headers=headers)
    if f == "csv":
        body = _csv_body(chunks, _csv_header(spec, names, out, xy), out.decimals, xy)
        return StreamingResponse(body, media_type=MEDIA[f], headers=headers)
    folder = tempfile.mkdtemp(prefix="twin-export-")
    path = os.path.join(folder, f"{spec.id}.{f}")
    writer = _write_gpkg if f == "gpkg" else _write_parquet
    try:
        await _file(chunks, _arrow_schema(spec, names), lambda batches, to: writer(batches, to, spec, out), path)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(path, media_type=MEDIA[f], headers=headers,
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))
