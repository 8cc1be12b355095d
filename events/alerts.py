"""`/alerts/…`: the rules (read by anyone, written by the owning department's key) and the alerts' own steps.

Alerts are the `alerts` layer (items, tiles, history under /collections/alerts); here are the open ones as
one list and the acknowledgement, which only a key of the rule's department (or an admin) may give.
"""

import orjson
from fastapi import APIRouter, Body, Path, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import text

from events import rules
from events.rules import Rule
from layers.changelog import json_response
from layers.store import set_write_context
from twin.access import require_read
from twin.auth import Principal, authenticate
from twin.errors import ApiError

router = APIRouter(prefix="/alerts", tags=["alerts"])
LAYER = "alerts"
RULE_NAME = Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class Acknowledgement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=1, max_length=2000)


def _owner(principal: Principal, department: str, what: str) -> None:
    if not (principal.is_admin or principal.department == department):
        raise ApiError(403, "forbidden_department", f"{what} belongs to {department}: the key of "
                       f"{principal.department} may not change it.")


@router.get("/rules")
async def list_rules(request: Request):
    """Every alert rule, from the departments' spec files and from this API."""
    async with request.app.state.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM events.rule ORDER BY department, name"))).all()
    return json_response({"rules": [rules.rule_json(r) for r in rows]})


@router.put("/rules/{name}")
async def put_rule(request: Request, name: str = RULE_NAME, rule: dict = Body(...)):
    """Create or replace a rule of the key's department; a changed rule is judged again over recent readings."""
    principal = await authenticate(request)
    try:
        parsed = Rule(**{**rule, "name": name})
    except ValidationError as e:
        first = e.errors()[0]
        raise ApiError(400, "invalid_rule", first["msg"], where=".".join(["body", *map(str, first["loc"])])) \
            from None
    hours = request.app.state.settings.alert_replay_hours

    def store(conn):
        owner = conn.execute(text("SELECT department FROM events.rule WHERE name = :name FOR UPDATE"),
                             {"name": name}).scalar()
        if owner is not None:
            _owner(principal, owner, f"Rule '{name}'")
        set_write_context(conn, principal.actor)
        return owner is None, rules.save(conn, parsed, principal.department if owner is None else owner,
                                         f"api:{principal.actor}", hours)

    async with request.app.state.engine.begin() as conn:
        created, _ = await conn.run_sync(store)
        row = (await conn.execute(text("SELECT * FROM events.rule WHERE name = :name"), {"name": name})).one()
    return json_response(rules.rule_json(row), status=201 if created else 200)


@router.delete("/rules/{name}", status_code=204)
async def delete_rule(request: Request, name: str = RULE_NAME):
    """Delete a rule; its open alerts close with the note 'rule deleted'."""
    principal = await authenticate(request)

    def remove(conn):
        row = conn.execute(text("SELECT id, department FROM events.rule WHERE name = :name FOR UPDATE"),
                           {"name": name}).first()
        if row is None:
            raise ApiError(404, "not_found", f"no rule named '{name}'", where="path.name")
        _owner(principal, row.department, f"Rule '{name}'")
        set_write_context(conn, principal.actor)
        rules.close_open_alerts(conn, row.id, "rule deleted")
        conn.execute(text("DELETE FROM events.rule WHERE id = :id"), {"id": row.id})

    async with request.app.state.engine.begin() as conn:
        await conn.run_sync(remove)


ALERT_COLUMNS = ("code, rule, rule_kind, severity, department, state, thing_id, thing_name, station_code, "
                 "datastream_id, parameter, limit_value, first_at, first_value, last_at, last_value, worst_at, "
                 "worst_value, readings, acknowledged_by, acknowledged_at, note, closed_at, context")


def alert_feature(row) -> dict:
    properties = {k: v for k, v in row._mapping.items() if k not in ("fid", "geometry", "version")}
    if properties.get("context"):
        properties["context"] = orjson.Fragment(properties["context"])
    return {"type": "Feature", "id": row.fid,
            "geometry": orjson.Fragment(row.geometry) if row.geometry else None, "properties": properties}


@router.get("")
async def open_alerts(request: Request):
    """The alerts not yet closed, newest first, as GeoJSON (the live map's alert panel)."""
    await require_read(request, [LAYER], "path")
    async with request.app.state.engine.connect() as conn:
        rows = (await conn.execute(text(
            f"SELECT fid, version, ST_AsGeoJSON(geom) AS geometry, {ALERT_COLUMNS} FROM layers.alerts "
            "WHERE state <> 'closed' ORDER BY first_at DESC, fid DESC"))).all()
    return json_response({"type": "FeatureCollection", "features": [alert_feature(r) for r in rows]})


@router.post("/{fid}/acknowledge")
async def acknowledge(request: Request, fid: int = Path(ge=1, le=2 ** 63 - 1), body: Acknowledgement = Body(...)):
    """Acknowledge an open alert, with a note; the alert stays until its readings clear."""
    principal = await authenticate(request)

    def ack(conn):
        # no row lock before the update: the update takes the change log's writer lock first, as ingest does
        row = conn.execute(text("SELECT state, department FROM layers.alerts WHERE fid = :fid"), {"fid": fid}).first()
        if row is None:
            raise ApiError(404, "not_found", f"no alert {fid}", where="path.fid")
        _owner(principal, row.department, f"Alert {fid}")
        set_write_context(conn, principal.actor)
        done = conn.execute(text("UPDATE layers.alerts SET state = 'acknowledged', acknowledged_by = :actor, "
                                 "acknowledged_at = now(), note = :note WHERE fid = :fid AND state = 'open'"),
                            {"fid": fid, "actor": principal.actor, "note": body.note}).rowcount
        if not done:
            state = conn.execute(text("SELECT state FROM layers.alerts WHERE fid = :fid"), {"fid": fid}).scalar()
            raise ApiError(409, "not_open", f"alert {fid} is {state}, not open", where="path.fid")

    async with request.app.state.engine.begin() as conn:
        await conn.run_sync(ack)
        row = (await conn.execute(text(
            f"SELECT fid, version, ST_AsGeoJSON(geom) AS geometry, {ALERT_COLUMNS} FROM layers.alerts "
            "WHERE fid = :fid"), {"fid": fid})).one()
    return json_response(alert_feature(row))
