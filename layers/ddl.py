"""The DDL that makes a layer, and that changes it: what a migration gave each built-in layer, as statements.

Names come from a validated spec (`layers.catalog.NAME`: lower-case letters, digits and underscores) and are
quoted all the same. `layers.registry` runs these statements in one transaction with the catalog row that
records them (`twin.layer_version.ddl`).
"""

from layers.catalog import SQL_TYPES, SRID, FieldSpec, LayerSpec

WIDENINGS = {("integer", "real"), *((t, "text") for t in SQL_TYPES if t != "text")}


def _q(name: str) -> str:
    return f'"{name}"'


def _column(field: FieldSpec, key: list[str]) -> str:
    return f"{_q(field.name)} {SQL_TYPES[field.type]}" + (" NOT NULL" if field.name in key else "")


def create(spec: LayerSpec) -> list[str]:
    """The layer's table, its history, the triggers that keep both and the change log, and its indexes."""
    table, past = f"layers.{_q(spec.id)}", f"history.{_q(spec.id)}"
    columns = ["fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY"]
    columns += [_column(f, spec.key) for f in spec.fields]
    if spec.geometry:
        columns.append(f"geom geometry({spec.geometry}, {SRID}) NOT NULL")
    columns += ["version integer NOT NULL DEFAULT 1", "updated_at timestamptz NOT NULL DEFAULT twin.change_time()"]
    if spec.key:
        columns.append(f"UNIQUE ({', '.join(_q(k) for k in spec.key)})")
    statements = [f"CREATE TABLE {table} (\n    " + ",\n    ".join(columns) + "\n)"]
    if spec.geometry:
        statements.append(f"CREATE INDEX {_q(spec.id + '_geom_idx')} ON {table} USING gist (geom)")
    statements.append(f"CREATE INDEX {_q(spec.id + '_updated_at_idx')} ON {table} (updated_at)")
    if spec.time_field and spec.time_field not in spec.key[:1]:
        statements.append(f"CREATE INDEX {_q(spec.id + '_time_idx')} ON {table} ({_q(spec.time_field)})")
    statements += [
        f"CREATE TABLE {past} (LIKE {table}, valid tstzrange NOT NULL)",
        f"CREATE INDEX {_q(spec.id + '_fid_idx')} ON {past} (fid, version)",
        f"CREATE INDEX {_q(spec.id + '_valid_idx')} ON {past} USING gist (valid{', geom' if spec.geometry else ''})",
        f"CREATE TRIGGER begin_change BEFORE INSERT OR UPDATE OR DELETE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION twin.begin_change()",
        f"CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION twin.refuse_truncate()",
        f"CREATE TRIGGER stamp_insert BEFORE INSERT ON {table} FOR EACH ROW "
        "WHEN (NEW.version IS DISTINCT FROM 1 OR NEW.updated_at IS DISTINCT FROM twin.change_time()) "
        "EXECUTE FUNCTION twin.stamp_insert()",
        f"CREATE TRIGGER bump_version BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION twin.bump_version()",
    ]
    kind = "'spatial'" if spec.geometry else ""
    for operation, tables in _TRANSITIONS:
        statements.append(f"CREATE TRIGGER record_{operation.lower()} AFTER {operation} ON {table} REFERENCING "
                          f"{tables} FOR EACH STATEMENT EXECUTE FUNCTION twin.record_changes({kind})")
    statements.append(f"INSERT INTO twin.feature_count VALUES ('{spec.id}', 0)")
    for operation, tables in _TRANSITIONS[0], _TRANSITIONS[2]:
        statements.append(f"CREATE TRIGGER count_features_{operation.lower()} AFTER {operation} ON {table} "
                          f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION twin.count_features()")
    if spec.cluster_counts:
        for operation, tables in _TRANSITIONS:
            statements.append(f"CREATE TRIGGER count_tile_cells_{operation.lower()} AFTER {operation} ON {table} "
                              f"REFERENCING {tables} FOR EACH STATEMENT "
                              f"EXECUTE FUNCTION twin.count_tile_cells('{spec.category}')")
    return statements


_TRANSITIONS = (("INSERT", "NEW TABLE AS new_rows"), ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                ("DELETE", "OLD TABLE AS old_rows"))


def add_field(spec: LayerSpec, field: FieldSpec, in_history: bool) -> list[str]:
    """`in_history`: the history table already has the column (the field was dropped before, and comes back)."""
    column = f"{_q(field.name)} {SQL_TYPES[field.type]}"
    statements = [f"ALTER TABLE layers.{_q(spec.id)} ADD COLUMN {column}"]
    if not in_history:
        statements.append(f"ALTER TABLE history.{_q(spec.id)} ADD COLUMN {column}")
    return statements


def drop_field(spec: LayerSpec, name: str) -> list[str]:
    """The column leaves the layer; its history keeps it, with every value it had."""
    return [f"ALTER TABLE layers.{_q(spec.id)} DROP COLUMN {_q(name)}"]


def widen_field(spec: LayerSpec, field: FieldSpec) -> list[str]:
    sql_type = SQL_TYPES[field.type]
    return [f"ALTER TABLE {schema}.{_q(spec.id)} ALTER COLUMN {_q(field.name)} TYPE {sql_type} "
            f"USING {_q(field.name)}::{sql_type}" for schema in ("layers", "history")]
