"""ETL over HTTP: a department uploads a file with its key, a run loads it in the background.

- `POST /etl/{job}` (multipart: `file`, and `layer`, `crs`, `mode`, `source_layer`) → 202, the run's
  id and its Location. Checked before anything is stored: the key (401), the size (413), the job
  and layer (404/400), the right to write the layer (403). Checked before the run starts: the
  content matches the file's name and a zip is safe (422, recorded as a failed run).
- `GET /etl/runs/{id}`: status, stage, counts, error, ignored source columns.
- `GET /etl/runs/{id}/quarantine` and `/repairs`: the rows rejected or repaired, paged.

Runs go through the synchronous ETL (`twin.db.sync_engine()`) in a worker thread; the run
record and its lock are taken in the request, so the id answered is the run doing the work.
"""

import errno

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from etl import records, uploads
from etl.crs import CrsError, parse_crs
from etl.jobs import JOBS, get_job
from etl.records import Run, open_run
from etl.run import MODES, JobError, check_request, load_file, load_raster
from twin.auth import Principal, authenticate, require_layer_write
from twin.db import sync_engine
from twin.errors import ApiError
from twin.urls import base_url

router = APIRouter(prefix="/etl", tags=["ETL"])
RUN_ID = Path(ge=1, le=2**63 - 1, description="the run's id")
FIELDS = ("layer", "crs", "mode", "source_layer")
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "GeoJSON, Shapefile (.zip), GeoPackage, "
                 "FlatGeobuf, GeoParquet, CSV/XLSX with coordinate columns, or a GeoTIFF for raster layers"},
        "layer": {"type": "string", "description": "target layer (default: the job's first)"},
        "crs": {"type": "string", "description": "source CRS when the file does not say: EPSG:xxxx, GCJ02 or BD09"},
        "mode": {"type": "string", "enum": ["upsert", "replace"], "default": "upsert"},
        "source_layer": {"type": "string", "description": "layer of a GeoPackage, dataset in a zip, or sheet"},
    }}}}}}


def _check_length(request: Request) -> int:
    limit = request.app.state.settings.max_upload_mb << 20
    length = request.headers.get("content-length")
    if length is None:
        raise ApiError(411, "length_required", "Send the upload with a Content-Length header.")
    if not length.isdigit():
        raise ApiError(400, "invalid_length", f"Content-Length {length!r} is not a number.")
    if int(length) > limit:
        raise ApiError(413, "upload_too_large", f"The upload is {int(length) / 2**20:.1f} MB; the limit is "
                       f"{limit >> 20} MB (setting max_upload_mb).", where="file")
    return limit


async def _form(request: Request) -> tuple[UploadFile, dict[str, str | None]]:
    try:
        form = await request.form(max_files=1, max_fields=len(FIELDS))
    except HTTPException as e:  # Starlette's multipart parser: too many parts, malformed body
        raise ApiError(400, "invalid_upload", f"The multipart body cannot be read: {e.detail}") from e
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise ApiError(400, "missing_file", "Send the data as a multipart/form-data part named 'file' "
                       "with a file name.", where="file")
    fields = {}
    for name in FIELDS:
        value = form.get(name)
        if value is not None and not isinstance(value, str):
            raise ApiError(400, "invalid_field", f"'{name}' must be a plain form field, not a file.", where=name)
        fields[name] = (value.strip() or None) if value is not None else None
    return upload, fields


def _request(job: str, fields: dict, principal: Principal):
    if get_job(job) is None:
        raise ApiError(404, "unknown_job", f"No ETL job '{job[:80]}'; jobs: {', '.join(JOBS)}, or a layer's name.",
                       where="path.job")
    mode = fields["mode"] or "upsert"
    if mode not in MODES:
        raise ApiError(400, "invalid_parameter", f"mode must be upsert or replace, not {mode!r}", where="mode")
    try:
        spec = check_request(job, fields["layer"], mode)
    except JobError as e:
        raise ApiError(400, "invalid_parameter", str(e), where="layer") from e
    require_layer_write(principal, spec.id)
    if spec.kind == "raster":
        mode = "replace"  # a raster layer is one file, replaced as a whole
    if fields["crs"]:
        try:
            parse_crs(fields["crs"])
        except CrsError as e:
            raise ApiError(400, "invalid_crs", str(e), where="crs") from e
    return spec, mode


def _run_url(request: Request, run_id: int) -> str:
    return f"{base_url(request)}/etl/runs/{run_id}"


def _perform(run: Run, job: str, spec, path, mode: str, fields: dict, actor: str, raster_dir, sha: str) -> None:
    with run:
        if spec.kind == "raster":
            load_raster(run, path, spec.id, raster_dir, sha)
        else:
            load_file(run, job, path, layer=spec.id, crs=fields["crs"], mode=mode, actor=actor,
                      source_layer=fields["source_layer"])


@router.post("/{job}", status_code=202, openapi_extra=UPLOAD_BODY,
             summary="Upload a file and load it into a layer (department key)")
async def start(job: str, request: Request, background: BackgroundTasks,
                principal: Principal = Depends(authenticate)):
    limit = _check_length(request)
    upload, fields = await _form(request)
    spec, mode = _request(job, fields, principal)
    settings = request.app.state.settings
    name = uploads.safe_name(upload.filename)
    run = await run_in_threadpool(open_run, sync_engine(), job, spec.id, mode, name, None, principal.department,
                                  principal.actor, fields["crs"], fields["source_layer"])
    handed_over = False
    try:
        path = settings.data_dir / "uploads" / f"{run.id}-{name}"
        try:
            sha = await run_in_threadpool(uploads.store, upload.file, path, limit)
            await run_in_threadpool(records.set_file, run, name, sha)
            await run_in_threadpool(uploads.check, path, name)
        except ValueError as e:
            await run_in_threadpool(records.fail, run, str(e))
            status = 413 if isinstance(e, uploads.UploadTooLarge) else 422
            raise ApiError(status, "unusable_file", f"{e} (run {run.id})", where="file",
                           headers={"Location": _run_url(request, run.id)}) from e
        except OSError as e:  # the data directory is full or not writable: nothing was kept (uploads.store)
            await run_in_threadpool(records.fail, run, f"the upload could not be stored: {e.strerror}")
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            raise ApiError(507 if full else 503, "insufficient_storage" if full else "storage_unavailable",
                           f"The server cannot store the upload now ({e.strerror}); nothing was loaded (run "
                           f"{run.id}). Retry later.", headers={"Location": _run_url(request, run.id),
                                                                "Retry-After": "60"}) from e
        background.add_task(_perform, run, job, spec, path, mode, fields, principal.actor,
                            settings.data_dir / "rasters", sha)
        handed_over = True
    finally:
        if not handed_over:
            await run_in_threadpool(records.close, run)
    url = _run_url(request, run.id)
    return JSONResponse({"id": run.id, "status": "running", "layer": spec.id, "mode": mode,
                         "links": [{"rel": "status", "type": "application/json", "href": url}]},
                        status_code=202, headers={"Location": url})


async def _run_row(request: Request, run_id: int, principal: Principal) -> dict:
    async with request.app.state.engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM twin.etl_run WHERE id = :id"), {"id": run_id})).mappings().first()
    if row is None:
        raise ApiError(404, "unknown_run", f"No ETL run {run_id}.", where="path.run_id")
    if not principal.may_write(row["layer"]):
        raise ApiError(403, "forbidden_layer", f"The key of {principal.department} may not see runs of layer "
                       f"'{row['layer']}'.")
    return dict(row)


@router.get("/runs/{run_id}", summary="An ETL run: status, stage, counts, error")
async def run_status(request: Request, run_id: int = RUN_ID, principal: Principal = Depends(authenticate)):
    row = await _run_row(request, run_id, principal)
    url = _run_url(request, run_id)
    return {
        **{k: row[k] for k in ("id", "job", "layer", "mode", "file_name", "crs", "source_layer", "department",
                               "actor", "status", "stage", "error", "ignored_columns")},
        "started_at": row["started_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "counts": {k: row[k] for k in ("read", "inserted", "updated", "unchanged", "deleted", "repaired",
                                       "quarantined")},
        "links": [{"rel": "self", "type": "application/json", "href": url},
                  {"rel": "quarantine", "type": "application/json", "href": f"{url}/quarantine"},
                  {"rel": "repairs", "type": "application/json", "href": f"{url}/repairs"},
                  {"rel": "collection", "type": "application/json",
                   "href": f"{base_url(request)}/collections/{row['layer']}"}],
    }


async def _notes(request: Request, table: str, part: str, run_id: int, limit: int, offset: int,
                 principal: Principal) -> dict:
    await _run_row(request, run_id, principal)
    async with request.app.state.engine.connect() as conn:
        total = (await conn.execute(text(f"SELECT count(*) FROM {table} WHERE run_id = :id"),
                                    {"id": run_id})).scalar_one()
        rows = (await conn.execute(text(
            f"SELECT row_number, reason, record FROM {table} WHERE run_id = :id "
            "ORDER BY row_number NULLS LAST, id LIMIT :limit OFFSET :offset"),
            {"id": run_id, "limit": limit, "offset": offset})).all()
    url = f"{_run_url(request, run_id)}/{part}"
    links = [{"rel": "self", "type": "application/json", "href": f"{url}?limit={limit}&offset={offset}"}]
    if offset + len(rows) < total:
        links.append({"rel": "next", "type": "application/json", "href": f"{url}?limit={limit}&offset={offset + limit}"})
    return {"run": run_id, "numberMatched": total, "numberReturned": len(rows),
            "items": [{"row": r, "reason": reason, "record": record} for r, reason, record in rows], "links": links}


@router.get("/runs/{run_id}/quarantine", summary="Rows a run rejected, with the reasons (paged)")
async def run_quarantine(request: Request, run_id: int = RUN_ID, limit: int = Query(100, ge=1, le=1000),
                         offset: int = Query(0, ge=0, le=2**31 - 1), principal: Principal = Depends(authenticate)):
    return await _notes(request, "twin.quarantine", "quarantine", run_id, limit, offset, principal)


@router.get("/runs/{run_id}/repairs", summary="Rows whose geometry a run repaired (paged)")
async def run_repairs(request: Request, run_id: int = RUN_ID, limit: int = Query(100, ge=1, le=1000),
                      offset: int = Query(0, ge=0, le=2**31 - 1), principal: Principal = Depends(authenticate)):
    return await _notes(request, "twin.etl_repair", "repairs", run_id, limit, offset, principal)
