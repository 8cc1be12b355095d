"""Change tracking: a change log for every write and a temporal history of past versions.

The current state stays in the plain layer tables. A BEFORE UPDATE row trigger bumps
`version` and `updated_at` (and drops no-op updates); statement-level AFTER triggers with
transition tables copy superseded versions into `history.<layer>` with their validity
range and append one `twin.change` row per feature, so no write path (ETL, API, a DBA's
SQL) can bypass it and bulk loads stay set-based. Each writing statement also sends a
NOTIFY on channel `twin_change` (payload: the layer), delivered when it commits.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LAYERS = ["city_components", "districts", "grids", "metro_lines", "metro_stations", "monitoring_stations",
          "pollution_sources", "rivers", "roads", "streets", "water_bodies", "water_quality"]
SPATIAL = [name for name in LAYERS if name != "water_quality"]

FUNCTIONS = r"""
CREATE FUNCTION twin.bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (to_jsonb(NEW) - 'version' - 'updated_at') = (to_jsonb(OLD) - 'version' - 'updated_at') THEN
        RETURN NULL;  -- nothing changed: no new version, no change record
    END IF;
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE FUNCTION twin.stamp_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := 1;
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE FUNCTION twin.write_actor() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('twin.actor', true), ''), 'sql:' || session_user)
$$;

CREATE FUNCTION twin.write_run() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('twin.run_id', true), '')::bigint
$$;

CREATE FUNCTION twin.record_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    layer text := TG_TABLE_NAME;
    spatial boolean := TG_NARGS > 0 AND TG_ARGV[0] = 'spatial';
    geom_of text := CASE WHEN spatial THEN '%s.geom' ELSE 'NULL::geometry' END;
    props text := '(to_jsonb(%s) - ''fid'' - ''geom'' - ''version'' - ''updated_at'')';
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        EXECUTE format('INSERT INTO history.%I SELECT o.*, tstzrange(o.updated_at, now()) FROM old_rows o', layer);
    END IF;
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO twin.change (layer, fid, operation, version, actor, run_id, after, geom_after) '
                       'SELECT %L, n.fid, ''insert'', n.version, twin.write_actor(), twin.write_run(), %s, %s '
                       'FROM new_rows n ORDER BY n.fid', layer, format(props, 'n'), format(geom_of, 'n'));
    ELSIF TG_OP = 'UPDATE' THEN
        EXECUTE format('INSERT INTO twin.change (layer, fid, operation, version, actor, run_id, before, after, '
                       'geom_before, geom_after) '
                       'SELECT %L, n.fid, ''update'', n.version, twin.write_actor(), twin.write_run(), %s, %s, %s, %s '
                       'FROM new_rows n JOIN old_rows o USING (fid) ORDER BY n.fid', layer,
                       format(props, 'o'), format(props, 'n'), format(geom_of, 'o'), format(geom_of, 'n'));
    ELSE
        EXECUTE format('INSERT INTO twin.change (layer, fid, operation, version, actor, run_id, before, geom_before) '
                       'SELECT %L, o.fid, ''delete'', o.version + 1, twin.write_actor(), twin.write_run(), %s, %s '
                       'FROM old_rows o ORDER BY o.fid', layer, format(props, 'o'), format(geom_of, 'o'));
    END IF;
    PERFORM pg_notify('twin_change', layer);  -- delivered at commit: caches listen and evict
    RETURN NULL;
END $$;
"""


def upgrade() -> None:
    op.execute("CREATE SCHEMA history")
    op.execute("""
        CREATE TABLE twin.change (
            change_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            layer text NOT NULL,
            fid bigint NOT NULL,
            operation text NOT NULL CHECK (operation IN ('insert', 'update', 'delete')),
            version integer NOT NULL,
            changed_at timestamptz NOT NULL DEFAULT now(),
            actor text NOT NULL,
            run_id bigint,
            before jsonb,
            after jsonb,
            geom_before geometry,
            geom_after geometry
        )""")
    op.execute("CREATE INDEX change_layer_time_idx ON twin.change (layer, changed_at)")
    op.execute("CREATE INDEX change_layer_fid_idx ON twin.change (layer, fid, version)")
    op.execute("CREATE INDEX change_run_idx ON twin.change (run_id) WHERE run_id IS NOT NULL")
    op.execute(FUNCTIONS)
    for name in LAYERS:
        op.execute(f"CREATE TABLE history.{name} (LIKE layers.{name}, valid tstzrange NOT NULL)")
        op.execute(f"CREATE INDEX {name}_fid_idx ON history.{name} (fid, version)")
        op.execute(f"CREATE INDEX {name}_valid_idx ON history.{name} USING gist (valid)")
        if name in SPATIAL:
            op.execute(f"CREATE INDEX {name}_geom_idx ON history.{name} USING gist (geom)")
        kind = "'spatial'" if name in SPATIAL else ""
        op.execute(f"CREATE TRIGGER stamp_insert BEFORE INSERT ON layers.{name} "
                   "FOR EACH ROW EXECUTE FUNCTION twin.stamp_insert()")
        op.execute(f"CREATE TRIGGER bump_version BEFORE UPDATE ON layers.{name} "
                   "FOR EACH ROW EXECUTE FUNCTION twin.bump_version()")
        for operation, tables in (("INSERT", "NEW TABLE AS new_rows"),
                                  ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                                  ("DELETE", "OLD TABLE AS old_rows")):
            op.execute(f"CREATE TRIGGER record_{operation.lower()} AFTER {operation} ON layers.{name} "
                       f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION twin.record_changes({kind})")


def downgrade() -> None:
    for name in LAYERS:
        for trigger in ("stamp_insert", "bump_version", "record_insert", "record_update", "record_delete"):
            op.execute(f"DROP TRIGGER {trigger} ON layers.{name}")
        op.execute(f"DROP TABLE history.{name}")
    op.execute("DROP FUNCTION twin.record_changes(), twin.write_run(), twin.write_actor(), "
               "twin.stamp_insert(), twin.bump_version()")
    op.execute("DROP TABLE twin.change")
    op.execute("DROP SCHEMA history")
