"""Undoing writes from the history: restoring past versions, and reverting a whole ETL run.

Reverting run N puts every feature N touched back as it was before N: rows N inserted are
deleted, rows it updated get their previous version back, rows it deleted are re-inserted
with the same fid. It is all or nothing: if any later change touched one of those features,
nothing is changed and the conflicting changes are reported. The revert is itself a set of
changes, recorded with actor `revert:run N`; the change-log lock is held from the conflict
check to the commit, so no write can slip in between.
"""

from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, Path, Request
from sqlalchemy import BigInteger, Column, MetaData, Table, Text, and_, delete, func, insert, select, tuple_, update
from sqlalchemy.engine import Connection

from layers.catalog import LayerSpec, get_layer
from layers.changelog import change, json_response
from layers.store import analyze_bulk, set_write_context
from layers.tables import current, history
from layers.writing import write_transaction
from twin.auth import Principal, authenticate, require_layer_write
from twin.errors import ApiError

router = APIRouter(tags=["etl"])

etl_run = Table("etl_run", MetaData(), Column("id", BigInteger, primary_key=True), Column("layer", Text),
                Column("status", Text), schema="twin")


class RevertError(Exception):
    def __init__(self, status: int, code: str, message: str, conflicts: list[dict] | None = None):
        super().__init__(message)
        self.status, self.code, self.conflicts = status, code, conflicts or []


@dataclass
class Reverted:
    run_id: int
    layer: str
    actor: str
    counts: dict = field(default_factory=dict)


def restored_columns(spec: LayerSpec) -> list[str]:
    """What a restore brings back: the fields and geometry (version and time are the triggers')."""
    return [f.name for f in spec.fields] + (["geom"] if spec.geometry else [])


def restore_update(spec: LayerSpec, wanted):
    """UPDATE each live feature to the past version named by `wanted`, a select of (fid, version)."""
    layer, past = current(spec), history(spec)
    return (update(layer).values({c: past.c[c] for c in restored_columns(spec)})
            .where(layer.c.fid == past.c.fid, tuple_(past.c.fid, past.c.version).in_(wanted)))


def restore_insert(conn, spec: LayerSpec, wanted) -> tuple[str, dict]:
    """SQL and parameters re-inserting deleted features, with their own fids, as the past versions in `wanted`.

    Core cannot say OVERRIDING SYSTEM VALUE (fid is GENERATED ALWAYS), so it is spliced into the compiled
    INSERT … SELECT; identifiers still come from the catalog and values stay bound parameters."""
    layer, past = current(spec), history(spec)
    names = ["fid"] + restored_columns(spec)
    # the version after the fid's last change (its deletion), as the insert trigger expects of a restore
    last = select(func.max(change.c.version)).where(change.c.layer == spec.id, change.c.fid == past.c.fid)
    source = (select(*(past.c[c] for c in names), (last.scalar_subquery() + 1).label("version"))
              .where(tuple_(past.c.fid, past.c.version).in_(wanted)))
    compiled = insert(layer).from_select(names + ["version"], source).compile(dialect=conn.dialect)
    sql = str(compiled).replace(") SELECT ", ") OVERRIDING SYSTEM VALUE SELECT ", 1)
    if "OVERRIDING SYSTEM VALUE" not in sql:
        raise RuntimeError(f"cannot place OVERRIDING SYSTEM VALUE in {sql[:200]}")
    return sql, compiled.params


def _plan(spec: LayerSpec, run_id: int):
    """Per feature the run touched: its first and last change in the run."""
    c = change.c
    span = (select(c.fid, func.min(c.change_id).label("first_id"), func.max(c.change_id).label("last_id"))
            .where(c.layer == spec.id, c.run_id == run_id).group_by(c.fid).subquery("span"))
    first, last = change.alias("first"), change.alias("last")
    return (select(span.c.fid, span.c.last_id, first.c.operation.label("first_op"),
                   (first.c.version - 1).label("prior_version"), last.c.operation.label("last_op"))
            .join_from(span, first, first.c.change_id == span.c.first_id)
            .join(last, last.c.change_id == span.c.last_id).subquery("plan"))


def _conflicts(conn: Connection, spec: LayerSpec, plan) -> list[dict]:
    later = change.alias("later")
    rows = conn.execute(select(later.c.fid, later.c.change_id, later.c.operation, later.c.version,
                               later.c.changed_at, later.c.actor)
                        .join_from(plan, later, and_(later.c.layer == spec.id, later.c.fid == plan.c.fid,
                                                     later.c.change_id > plan.c.last_id))
                        .order_by(later.c.change_id).limit(1000)).all()
    return [{"fid": r.fid, "change": r.change_id, "operation": r.operation, "version": r.version,
             "time": r.changed_at.isoformat(), "actor": r.actor} for r in rows]


def revert_run(conn: Connection, run_id: int) -> Reverted:
    """Undo run `run_id` inside the caller's transaction, or raise RevertError (nothing changed)."""
    run = conn.execute(select(etl_run).where(etl_run.c.id == run_id)).first()
    if run is None:
        raise RevertError(404, "unknown_run", f"There is no ETL run {run_id}.")
    if run.status != "succeeded":
        raise RevertError(409, "run_not_succeeded", f"Run {run_id} is {run.status}: only a succeeded run "
                          "changed anything, so only one can be reverted.")
    spec = get_layer(run.layer)
    if spec is None or spec.kind == "raster":
        raise RevertError(409, "not_revertible", f"Run {run_id} loaded {run.layer!r}, which has no feature history; "
                          "load the previous file again instead.")
    conn.execute(select(func.twin.claim_change_log()))
    plan = _plan(spec, run_id)
    conflicts = _conflicts(conn, spec, plan)
    if conflicts:
        fids = sorted({c["fid"] for c in conflicts})
        raise RevertError(409, "revert_conflict", f"Run {run_id} cannot be reverted: {len(fids)} of the features "
                          f"it wrote were changed later (fids {', '.join(map(str, fids[:20]))}"
                          f"{' …' if len(fids) > 20 else ''}). Nothing was changed.", conflicts)
    actor = f"revert:run {run_id}"
    set_write_context(conn, actor=actor)
    layer = current(spec)
    created = plan.c.first_op == "insert"
    gone = plan.c.last_op == "delete"
    deleted = conn.execute(delete(layer).where(layer.c.fid.in_(select(plan.c.fid).where(created, ~gone)))).rowcount
    prior = select(plan.c.fid, plan.c.prior_version)
    restored = conn.execute(restore_update(spec, prior.where(~created, ~gone))).rowcount
    sql, params = restore_insert(conn, spec, prior.where(~created, gone))
    reinserted = conn.exec_driver_sql(sql, params).rowcount
    analyze_bulk(conn, spec.id, deleted + restored + reinserted, deleted + restored)
    return Reverted(run_id, spec.id, actor, {"deleted": deleted, "restored": restored, "reinserted": reinserted})


@router.post("/etl/runs/{run_id}/revert")
async def revert_run_route(request: Request, run_id: int = Path(ge=1, le=2**63 - 1),
                           principal: Principal = Depends(authenticate)):
    """Undo an ETL run (admin key or a key of the department owning its layer); 409 with the conflicting
    changes when later edits touched the same features."""
    engine = request.app.state.engine
    async with engine.connect() as conn:
        layer = (await conn.execute(select(etl_run.c.layer).where(etl_run.c.id == run_id))).scalar()
    if layer is None:
        raise ApiError(404, "unknown_run", f"There is no ETL run {run_id}.", where="path.run_id")
    require_layer_write(principal, layer)
    try:
        async with write_transaction(request, f"revert:run {run_id}") as conn:
            result = await conn.run_sync(revert_run, run_id)
    except RevertError as e:
        body = {"code": e.code, "description": str(e)}
        if e.conflicts:
            body["conflicts"] = e.conflicts
        return json_response(body, status=e.status)
    return {"run": result.run_id, "layer": result.layer, "actor": result.actor, "reverted": result.counts}
