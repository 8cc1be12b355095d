"""Layers at run time: register a layer by its spec, change it by versions, archive and restore it.

Every step is one transaction: the catalog row (`twin.layer`), the version with the DDL it ran
(`twin.layer_version`, `layers.ddl`), the DDL itself and the layer's default style (layers.default_style), so a
failure leaves nothing half made, and the database alone says what every layer is (a backup carries it). A committed step is announced on
`twin_layers`; every server process reloads its catalog from it (layers.following).

The layers that ship with the project are registered the same way by `ship`, run by `twin db upgrade`
after the migrations: a shipped spec whose table a migration made is adopted as it is; a new one is created;
one whose file changed since it was last shipped is changed, by the same rules as a department's change (so
a change made at run time to a shipped layer stands until a release changes its file).

Rules of a change: titles, labels, units, aliases, zooms, style, group, privacy and clustering change freely;
a field may be added, and its type widened (integer → real, anything → text). What could refuse or lose
data already stored needs `allow_loss`: dropping a field (its values stay in the layer's history),
narrowing a range or a value list, making a field required or checked. A type is never narrowed (add a new
field and drop the old one); the kind, geometry, key and per-cell counting never change.
"""

import json
import tomllib
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import Connection

from layers import ddl
from layers.catalog import LayerSpec, install, shipped
from layers.codes import CHECKS
from layers.default_style import default_style, drawn

MAX_FIELDS = 100
MAX_ID = 40  # index names add a suffix to the id and must stay within PostgreSQL's 63 bytes
SYSTEM_COLUMNS = {"fid", "geom", "version", "updated_at", "valid"}
RESERVED_IDS = {"onemap"}  # the composite tile and style
# PostgreSQL's reserved key words (Appendix C of its manual): never a table or a new field's name
SQL_RESERVED = set("""all analyse analyze and any array as asc asymmetric authorization binary both case cast check
collate collation column concurrently constraint create cross current_catalog current_date current_role
current_schema current_time current_timestamp current_user default deferrable desc distinct do else end except
false fetch for foreign freeze from full grant group having ilike in initially inner intersect into is isnull join
lateral leading left like limit localtime localtimestamp natural not notnull null offset on only or order outer
overlaps placing primary references returning right select session_user similar some symmetric system_user table
tablesample then to trailing true union unique user using variadic verbose when where window with""".split())
SHIPPED_ACTOR = "twin (shipped)"
LOCK = "SELECT pg_advisory_xact_lock(hashtext('twin.layer'))"


class SpecError(Exception):
    """A spec, or a change, that cannot be taken; `where` points at the offending key."""

    def __init__(self, detail: str, where: str, status: int = 422, code: str = "invalid_spec"):
        super().__init__(detail)
        self.detail, self.where, self.status, self.code = detail, where, status, code


@dataclass(frozen=True)
class Step:
    layer: str
    version: int
    change: str
    ddl: list[str]
    note: str = ""


def _holds_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    return isinstance(value, list) and any(_holds_nul(v) for v in value)


def parse(body: bytes | str, media: str = "json") -> LayerSpec:
    """A spec from TOML or JSON text."""
    try:
        raw = tomllib.loads(body.decode() if isinstance(body, bytes) else body) if media == "toml" \
            else json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise SpecError(f"The spec is not valid {media.upper()}: {e}", "body") from e
    if not isinstance(raw, dict):
        raise SpecError("A spec is an object (a table in TOML).", "body")
    if _holds_nul(raw):
        raise SpecError("A spec holds no NUL character (PostgreSQL text cannot).", "body")
    try:
        return LayerSpec.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        pointer = "/".join(str(p) for p in first["loc"]) or "body"
        raise SpecError(f"{pointer}: {first['msg']}", pointer) from e


def _check_name(name: str, where: str, what: str) -> None:
    if name in SQL_RESERVED:
        raise SpecError(f"{what} '{name}' is an SQL reserved word.", where)


def _check_fields(spec: LayerSpec) -> None:
    if len(spec.fields) > MAX_FIELDS:
        raise SpecError(f"A layer has at most {MAX_FIELDS} fields; this one has {len(spec.fields)}.", "fields")
    seen = set()
    for i, field in enumerate(spec.fields):
        if field.name in seen:
            raise SpecError(f"Field '{field.name}' is declared twice.", f"fields/{i}/name")
        seen.add(field.name)
        if field.name in SYSTEM_COLUMNS:
            raise SpecError(f"Field '{field.name}' is a column every layer has already.", f"fields/{i}/name")
        if field.min is not None and field.max is not None and field.min > field.max:
            raise SpecError(f"Field '{field.name}': min is above max.", f"fields/{i}/min")
        if field.check is not None and field.check not in CHECKS:
            raise SpecError(f"Field '{field.name}': no code check '{field.check}' (checks: {', '.join(CHECKS)}).",
                            f"fields/{i}/check")
    for i, key in enumerate(spec.key):
        if spec.field(key) is None:
            raise SpecError(f"Key field '{key}' is not among the fields.", f"key/{i}")
    if spec.time_field and (spec.field(spec.time_field) is None or spec.field(spec.time_field).type != "timestamptz"):
        raise SpecError("time_field names a field of type timestamptz.", "time_field")


def _check_kind(spec: LayerSpec) -> None:
    if spec.kind == "vector" and (spec.geometry is None or not spec.key):
        raise SpecError("A vector layer has a geometry and a key.", "geometry" if spec.geometry is None else "key")
    if spec.kind == "series" and spec.geometry is not None:
        raise SpecError("A series has no geometry of its own: its readings belong to its stations.", "geometry")
    if spec.minzoom > spec.maxzoom:
        raise SpecError("minzoom is above maxzoom.", "minzoom")
    if spec.cluster_counts and (spec.geometry != "Point" or not spec.category):
        raise SpecError("cluster_counts needs points and a field with a value list to count by.", "cluster_counts")


def _check_stations(conn: Connection, spec: LayerSpec) -> None:
    if spec.stations is None:
        return
    found = conn.execute(text("SELECT spec->>'geometry' FROM twin.layer WHERE id = :id AND state = 'active'"),
                         {"id": spec.stations}).scalar()
    if found != "Point":
        raise SpecError(f"stations names a layer of points; '{spec.stations}' is not one.", "stations")


def _check_owner(spec: LayerSpec, department: str | None) -> None:
    """`department`: the registering key's, None for an admin."""
    if department is not None and spec.department != department:
        raise SpecError(f"A key of {department} registers layers of {department}, not of {spec.department}.",
                        "department")


def _row(conn: Connection, layer: str):
    return conn.execute(text("SELECT spec, version, state, shipped FROM twin.layer WHERE id = :id FOR UPDATE"),
                        {"id": layer}).first()


def _record(conn: Connection, spec: LayerSpec, step: Step, actor: str, state: str = "active",
            shipped_: bool = False) -> Step:
    spec_json = spec.model_dump_json(exclude_defaults=True)
    conn.execute(text("INSERT INTO twin.layer (id, spec, version, state, shipped, changed_by) "
                      "VALUES (:id, CAST(:spec AS jsonb), :version, :state, :shipped, :actor) "
                      "ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, version = excluded.version, "
                      "state = excluded.state, changed_by = excluded.changed_by, changed_at = now()"),
                 {"id": spec.id, "spec": spec_json, "version": step.version, "state": state, "shipped": shipped_,
                  "actor": actor})
    conn.execute(text("INSERT INTO twin.layer_version (layer, version, spec, change, ddl, note, changed_by) "
                      "VALUES (:id, :version, CAST(:spec AS jsonb), :change, :ddl, :note, :actor)"),
                 {"id": spec.id, "version": step.version, "spec": spec_json, "change": step.change, "ddl": step.ddl,
                  "note": step.note or None, "actor": actor})
    return step


def _run(conn: Connection, statements: list[str]) -> None:
    for statement in statements:
        conn.exec_driver_sql(statement)


def register(conn: Connection, spec: LayerSpec, actor: str, department: str | None = None,
             shipped_: bool = False) -> Step:
    """Create the layer: its table and everything a built-in layer has. `department`: as in `_check_owner`."""
    conn.execute(text(LOCK))
    if len(spec.id) > MAX_ID:
        raise SpecError(f"A layer id has at most {MAX_ID} characters.", "id")
    if spec.id in RESERVED_IDS:
        raise SpecError(f"'{spec.id}' names the composite one map.", "id")
    _check_name(spec.id, "id", "Layer id")
    for i, field in enumerate(spec.fields):
        _check_name(field.name, f"fields/{i}/name", "Field name")
    if spec.kind == "raster":
        raise SpecError("Raster layers come from raster sources (twin etl raster), not from a spec.", "kind")
    _check_fields(spec)
    _check_kind(spec)
    _check_owner(spec, department)
    _check_stations(conn, spec)
    known = _row(conn, spec.id)
    if known is not None:
        archived = " (archived: restore it)" if known.state == "archived" else ""
        raise SpecError(f"Layer '{spec.id}' exists already{archived}.", "id", code="layer_exists")
    if conn.execute(text("SELECT to_regclass(:t)"), {"t": f"layers.{spec.id}"}).scalar() is not None:
        raise SpecError(f"A table layers.{spec.id} exists already.", "id", code="layer_exists")
    statements = ddl.create(spec)
    _run(conn, statements)
    if drawn(spec) and not shipped_:  # a shipped layer's style is a file of styles/layers
        conn.execute(text("INSERT INTO twin.layer_style (name, style, changed_by) "
                          "VALUES (:id, CAST(:style AS jsonb), :actor) ON CONFLICT (name) DO NOTHING"),
                     {"id": spec.id, "style": json.dumps(default_style(spec), ensure_ascii=False), "actor": actor})
    return _record(conn, spec, Step(spec.id, 1, "register", statements), actor, shipped_=shipped_)


def _narrowings(old, new, i: int) -> list[str]:
    where = f"fields/{i}"
    found = []
    if new.min is not None and (old.min is None or new.min > old.min):
        found.append(f"{where}/min")
    if new.max is not None and (old.max is None or new.max < old.max):
        found.append(f"{where}/max")
    if new.values is not None and (old.values is None or not set(new.values) >= set(old.values)):
        found.append(f"{where}/values")
    if new.required and not old.required:
        found.append(f"{where}/required")
    if new.check is not None and new.check != old.check:
        found.append(f"{where}/check")
    return found


def _history_columns(conn: Connection, layer: str) -> dict[str, str]:
    rows = conn.execute(text("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                             "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped"),
                        {"t": f"history.{layer}"})
    return dict(rows.all())


def plan_change(conn: Connection, old: LayerSpec, new: LayerSpec, allow_loss: bool) -> tuple[list[str], list[str]]:
    """(DDL, what changed) to take `old` to `new`; a SpecError when the rules above refuse it."""
    for name in ("kind", "geometry", "key", "cluster_counts"):
        if getattr(old, name) != getattr(new, name):
            raise SpecError(f"A layer's {name} does not change after registration.", name)
    _check_fields(new)
    _check_kind(new)
    _check_stations(conn, new)
    statements, notes, lossy = [], [], []
    for i, field in enumerate(new.fields):
        before = old.field(field.name)
        if before is None:
            _check_name(field.name, f"fields/{i}/name", "Field name")
            past = _history_columns(conn, new.id)
            if field.name in past and past[field.name] != ddl.SQL_TYPES[field.type]:
                raise SpecError(f"Field '{field.name}' was dropped as {past[field.name]}; it comes back only as that "
                                "type (its history holds those values).", f"fields/{i}/type")
            statements += ddl.add_field(new, field, field.name in past)
            notes.append(f"added {field.name}")
            continue
        if before.type != field.type:
            if (before.type, field.type) not in ddl.WIDENINGS:
                raise SpecError(f"Field '{field.name}' cannot narrow from {before.type} to {field.type}: add a new "
                                "field and drop this one.", f"fields/{i}/type")
            statements += ddl.widen_field(new, field)
            notes.append(f"widened {field.name} to {field.type}")
        lossy += _narrowings(before, field, i)
    for field in old.fields:
        if new.field(field.name) is None:
            if field.name == old.time_field:
                raise SpecError(f"Field '{field.name}' is the time field.", "fields")
            statements += ddl.drop_field(new, field.name)
            notes.append(f"dropped {field.name}")
            lossy.append(f"fields: {field.name} dropped")
    if lossy and not allow_loss:
        raise SpecError(f"This change could refuse or lose stored data ({', '.join(lossy)}); send it again with "
                        "allow_loss to go ahead.", lossy[0].split(":")[0])
    return statements, notes or ["spec changed"]


def change(conn: Connection, spec: LayerSpec, actor: str, allow_loss: bool = False,
           department: str | None = None) -> Step | None:
    """Take the layer to `spec`, as a new version; None when it already is that. `department`: as in `_check_owner`
    (only an admin gives a layer to another department)."""
    conn.execute(text(LOCK))
    row = _row(conn, spec.id)
    if row is None or row.state != "active":
        raise SpecError(f"No active layer '{spec.id}'.", "id", 404, "unknown_layer")
    old = LayerSpec.model_validate(row.spec)
    _check_owner(old, department)
    if spec.department != old.department and department is not None:
        raise SpecError("Only an admin key gives a layer to another department.", "department")
    if old == spec:
        return None
    statements, notes = plan_change(conn, old, spec, allow_loss)
    _run(conn, statements)
    _restyle(conn, old, spec, actor)
    return _record(conn, spec, Step(spec.id, row.version + 1, "change", statements, "; ".join(notes)), actor,
                   shipped_=row.shipped)


def _restyle(conn: Connection, old: LayerSpec, new: LayerSpec, actor: str) -> None:
    """A stored default style follows the spec (zooms, title, fields); one its owner replaced is left alone."""
    stored = conn.execute(text("SELECT style FROM twin.layer_style WHERE name = :id"), {"id": new.id}).scalar()
    if stored is not None and drawn(old) and stored == default_style(old):
        conn.execute(text("UPDATE twin.layer_style SET style = CAST(:style AS jsonb), changed_by = :actor, "
                          "changed_at = now() WHERE name = :id"),
                     {"id": new.id, "style": json.dumps(default_style(new), ensure_ascii=False), "actor": actor})


def _set_state(conn: Connection, layer: str, state: str, actor: str, department: str | None) -> Step:
    conn.execute(text(LOCK))
    row = _row(conn, layer)
    want = "active" if state == "archived" else "archived"
    if row is None or row.state != want:
        raise SpecError(f"No {want} layer '{layer}'.", "layer", 404, "unknown_layer")
    spec = LayerSpec.model_validate(row.spec)
    _check_owner(spec, department)
    step = Step(layer, row.version + 1, "archive" if state == "archived" else "restore", [])
    return _record(conn, spec, step, actor, state=state, shipped_=row.shipped)


def archive(conn: Connection, layer: str, actor: str, department: str | None = None) -> Step:
    """Take the layer off the map; its table, history and change log stay, to be restored."""
    return _set_state(conn, layer, "archived", actor, department)


def restore(conn: Connection, layer: str, actor: str, department: str | None = None) -> Step:
    return _set_state(conn, layer, "active", actor, department)


def revert(conn: Connection, layer: str, version: int, actor: str, allow_loss: bool = False,
           department: str | None = None) -> Step | None:
    """Take the layer back to the spec of an earlier version, as a new version (by the rules of `change`)."""
    spec = conn.execute(text("SELECT spec FROM twin.layer_version WHERE layer = :id AND version = :v"),
                        {"id": layer, "v": version}).scalar()
    if spec is None:
        raise SpecError(f"Layer '{layer}' has no version {version}.", "version", 404, "unknown_version")
    return change(conn, LayerSpec.model_validate(spec), actor, allow_loss, department)


def versions(conn: Connection, layer: str) -> list[dict]:
    rows = conn.execute(text("SELECT version, change, note, ddl, changed_by, changed_at, spec FROM twin.layer_version "
                             "WHERE layer = :id ORDER BY version"), {"id": layer})
    return [dict(r._mapping) for r in rows]


CATALOG = "SELECT spec FROM twin.layer WHERE state = 'active' ORDER BY id"


def install_rows(rows) -> dict[str, LayerSpec]:
    """Install the catalog of the rows of `CATALOG` in this process (the shipped specs while the database has none:
    before `ship`); the layers whose spec changed, came or went."""
    return install({s.id: s for s in (LayerSpec.model_validate(spec) for (spec,) in rows)} or shipped())


def refresh(conn: Connection) -> dict[str, LayerSpec]:
    """Install the database's catalog in this process, as `install_rows`."""
    if conn.execute(text("SELECT to_regclass('twin.layer')")).scalar() is None:
        return install(shipped())
    return install_rows(conn.execute(text(CATALOG)).all())


def ship(conn: Connection) -> list[Step]:
    """Register, adopt or change the layers that ship with the project (after the migrations)."""
    conn.execute(text(LOCK))
    steps = []
    for spec in shipped().values():
        try:
            steps.append(_ship(conn, spec))
        except SpecError as e:
            raise SpecError(f"layers/specs/{spec.id}.toml: {e.detail}", e.where) from e
    return [step for step in steps if step is not None]


def _ship(conn: Connection, spec: LayerSpec) -> Step | None:
    row = _row(conn, spec.id)
    if row is None:
        made = conn.execute(text("SELECT to_regclass(:t)"), {"t": f"layers.{spec.id}"}).scalar() is not None
        if spec.kind == "raster" or made:  # a migration made its table
            return _record(conn, spec, Step(spec.id, 1, "adopt", []), SHIPPED_ACTOR, shipped_=True)
        return register(conn, spec, SHIPPED_ACTOR, shipped_=True)
    last_shipped = conn.execute(text("SELECT spec FROM twin.layer_version WHERE layer = :id AND changed_by = :by "
                                     "ORDER BY version DESC LIMIT 1"), {"id": spec.id, "by": SHIPPED_ACTOR}).scalar()
    if row.state == "active" and (last_shipped is None or LayerSpec.model_validate(last_shipped) != spec):
        return change(conn, spec, SHIPPED_ACTOR)  # a new release's spec (changes made at run time stand till then)
    return None
