"""What changed in a layer between two moments: features added, removed and modified.

Only features the change log shows as touched in (from, to] are compared, so a diff costs
what changed, not the size of the layer; a feature changed and changed back is not listed.
A moved geometry is measured by the Hausdorff distance in metres (`changelog.shift_m`):
the farthest any point of one shape lies from the other, which also catches a reshaped
polygon whose centroid stayed put.
"""

from fastapi import APIRouter, Query, Request
from sqlalchemy import case, func, literal, null, select
from sqlalchemy.dialects.postgresql import array

from layers.catalog import LayerSpec
from layers.changelog import geometry_json, json_response, parse_moment, shift_m
from layers.history import MAX_LIMIT, touched_between
from layers.collections import layer_or_404
from layers.tables import layer_at
from twin.errors import ApiError

router = APIRouter(tags=["history"])


def _diff_rows(spec: LayerSpec, start, end, limit: int):
    touched = touched_between(spec.id, start, end)
    before_all, after_all = layer_at(spec, start).alias("then"), layer_at(spec, end).alias("now")
    o = select(before_all).where(before_all.c.fid.in_(touched)).subquery("o")
    n = select(after_all).where(after_all.c.fid.in_(touched)).subquery("n")
    names = [f.name for f in spec.fields]
    differing = func.array_remove(array([case((o.c[f].is_distinct_from(n.c[f]), literal(f)), else_=null())
                                         for f in names]), null())
    geom_changed = o.c.geom.is_distinct_from(n.c.geom) if spec.geometry else literal(False)
    kind = case((o.c.fid.is_(None), "added"), (n.c.fid.is_(None), "removed"), else_="modified")
    columns = [func.coalesce(o.c.fid, n.c.fid).label("fid"), kind.label("kind"), o.c.version.label("o_version"),
               n.c.version.label("n_version"), differing.label("differing"), geom_changed.label("geom_changed")]
    columns += [o.c[f].label(f"o_{f}") for f in names] + [n.c[f].label(f"n_{f}") for f in names]
    if spec.geometry:
        columns += [func.ST_AsBinary(o.c.geom).label("o_geom"), func.ST_AsBinary(n.c.geom).label("n_geom"),
                    shift_m(o.c.geom, n.c.geom).label("shift_m")]
    joined = select(*columns).select_from(o.join(n, o.c.fid == n.c.fid, full=True)).subquery("joined")
    real = (joined.c.kind != "modified") | (func.cardinality(joined.c.differing) > 0) | joined.c.geom_changed
    ranked = select(joined, func.row_number().over(partition_by=joined.c.kind, order_by=joined.c.fid).label("rank"),
                    func.count().over(partition_by=joined.c.kind).label("total")).where(real).subquery("ranked")
    return select(ranked).where(ranked.c.rank <= limit).order_by(ranked.c.kind, ranked.c.fid)


def _feature(spec: LayerSpec, row, side: str) -> dict:
    values = row._mapping
    return {"type": "Feature", "id": row.fid,
            "geometry": geometry_json(values[f"{side}_geom"]) if spec.geometry else None,
            "properties": {f.name: values[f"{side}_{f.name}"] for f in spec.fields}}


def _entry(spec: LayerSpec, row) -> dict:
    values = row._mapping
    if row.kind == "added":
        return {"fid": row.fid, "version": row.n_version, "feature": _feature(spec, row, "n")}
    if row.kind == "removed":
        return {"fid": row.fid, "version": row.o_version, "feature": _feature(spec, row, "o")}
    changed = {f: {"from": values[f"o_{f}"], "to": values[f"n_{f}"]} for f in row.differing}
    if row.geom_changed:
        changed["geometry"] = {"shift_m": None if values["shift_m"] is None else round(values["shift_m"], 3)}
    return {"fid": row.fid, "from_version": row.o_version, "to_version": row.n_version, "changed": changed}


@router.get("/collections/{layer}/diff")
async def layer_diff(request: Request, layer: str,
                     from_: str = Query(..., alias="from", description="the earlier moment (ISO 8601)"),
                     to: str | None = Query(None, description="the later moment; now when absent"),
                     limit: int = Query(1000, ge=1, le=MAX_LIMIT, description="at most this many of each kind")):
    """Features added, removed and modified between two moments, with the changed fields and how far
    each geometry moved (metres)."""
    spec = layer_or_404(layer)
    start, end = parse_moment(from_, "query.from"), parse_moment(to, "query.to")
    if start is None:
        raise ApiError(400, "invalid_parameter", "from is required: the earlier moment", where="query.from")
    if end is not None and start > end:
        raise ApiError(400, "invalid_parameter", "from is later than to", where="query.from")
    async with request.app.state.read_engine.connect() as conn:
        rows = (await conn.execute(_diff_rows(spec, start, end, limit))).all()
    body = {"layer": spec.id, "from": start, "to": end, "counts": {"added": 0, "removed": 0, "modified": 0},
            "added": [], "removed": [], "modified": []}
    for row in rows:
        body["counts"][row.kind] = row.total
        body[row.kind].append(_entry(spec, row))
    body["truncated"] = any(body["counts"][k] > len(body[k]) for k in ("added", "removed", "modified"))
    return json_response(body)
