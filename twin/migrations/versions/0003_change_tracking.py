"""Change tracking: a change log for every write and a temporal history of past versions.

The current state stays in the plain layer tables. A BEFORE UPDATE row trigger bumps
`version` and `updated_at` (and drops no-op updates); statement-level AFTER triggers with
transition tables copy superseded versions into `history.<layer>` with their validity
range and append one `twin.change` row per feature, so no write path (ETL, API, a DBA's
SQL) can bypass it and bulk loads stay set-based. Each writing statement also sends a
NOTIFY on channel `twin_change` (payload: the layer), delivered when it commits.

Writers are serialised: a BEFORE statement trigger takes a transaction-scoped advisory
lock and stamps the transaction with the clock time it got the lock. So change ids are
allocated in commit order (a client following the feed by change id never skips a change
that commits late), and every change of a transaction carries one moment, later than the
moments of all transactions committed before it (as-of queries see whole transactions,
in commit order). TRUNCATE, which would bypass the history, is refused.

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
CREATE FUNCTION twin.claim_change_log() RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    stamp text := current_setting('twin.change_time', true);
BEGIN
    IF coalesce(stamp, '') = '' THEN
        PERFORM pg_advisory_xact_lock(1953982830);  -- 'twin' in ASCII; held until commit
        stamp := clock_timestamp()::text;
        PERFORM set_config('twin.change_time', stamp, true);
    END IF;
    RETURN stamp::timestamptz;
END $$;

CREATE FUNCTION twin.change_time() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('twin.change_time', true), '')::timestamptz, now())
$$;

CREATE FUNCTION twin.begin_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM twin.claim_change_log();
    RETURN NULL;
END $$;

CREATE FUNCTION twin.refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'TRUNCATE of %.% would bypass the change history; use DELETE', TG_TABLE_SCHEMA, TG_TABLE_NAME;
END $$;

CREATE FUNCTION twin.bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version;
    NEW.updated_at := OLD.updated_at;
    IF NEW IS NOT DISTINCT FROM OLD THEN  -- exact, column by column (geometry `=` compares coordinates)
        RETURN NULL;  -- nothing changed: no new version, no change record
    END IF;
    NEW.version := OLD.version + 1;
    NEW.updated_at := greatest(twin.change_time(), OLD.updated_at);  -- never before the version it supersedes
    RETURN NEW;
END $$;

-- A new feature starts at version 1. A restored deletion (layers.revert: OVERRIDING SYSTEM VALUE) brings the
-- version after its fid's last change, so an old ETag never matches again; that one is kept.
CREATE FUNCTION twin.stamp_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := greatest(coalesce(NEW.version, 1), 1);
    NEW.updated_at := twin.change_time();
    RETURN NEW;
END $$;

-- SQL building the properties of the row called `alias` as jsonb, column by column: to_jsonb of the whole
-- row would also render its geometry as GeoJSON only to drop it, the bulk of the cost. 50 pairs a call
-- (the 100-argument limit), joined with ||.
CREATE FUNCTION twin.properties_json(rel regclass, alias text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(string_agg(part, ' || ' ORDER BY chunk), '''{}''::jsonb') FROM (
        SELECT chunk, 'jsonb_build_object(' || string_agg(format('%L, %I.%I', attname, alias, attname), ', '
                                                          ORDER BY attnum) || ')' AS part
        FROM (SELECT attname, attnum, (row_number() OVER (ORDER BY attnum) - 1) / 50 AS chunk FROM pg_attribute
              WHERE attrelid = rel AND attnum > 0 AND NOT attisdropped
                AND attname NOT IN ('fid', 'geom', 'version', 'updated_at')) named
        GROUP BY chunk) parts
$$;

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
    old_props text := twin.properties_json(TG_RELID, 'o');
    new_props text := twin.properties_json(TG_RELID, 'n');
    recorded bigint;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        EXECUTE format('INSERT INTO history.%I SELECT o.*, tstzrange(o.updated_at, n.updated_at) '
                       'FROM old_rows o JOIN new_rows n USING (fid)', layer);
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('INSERT INTO history.%I SELECT o.*, tstzrange(o.updated_at, '
                       'greatest(twin.change_time(), o.updated_at)) FROM old_rows o', layer);
    END IF;
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO twin.change (layer, fid, operation, version, changed_at, actor, run_id, after, '
                       'geom_after) '
                       'SELECT %L, n.fid, ''insert'', n.version, n.updated_at, twin.write_actor(), twin.write_run(), '
                       '%s, %s FROM new_rows n ORDER BY n.fid', layer, new_props, format(geom_of, 'n'));
    ELSIF TG_OP = 'UPDATE' THEN
        EXECUTE format('INSERT INTO twin.change (layer, fid, operation, version, changed_at, actor, run_id, before, '
                       'after, geom_before, geom_after) '
                       'SELECT %L, n.fid, ''update'', n.version, n.updated_at, twin.write_actor(), twin.write_run(), '
                       '%s, %s, %s, %s FROM new_rows n JOIN old_rows o USING (fid) ORDER BY n.fid', layer,
                       old_props, new_props, format(geom_of, 'o'), format(geom_of, 'n'));
    ELSE
        EXECUTE format('INSERT INTO twin.change (layer, fid, operation, version, changed_at, actor, run_id, before, '
                       'geom_before) '
                       'SELECT %L, o.fid, ''delete'', o.version + 1, greatest(twin.change_time(), o.updated_at), '
                       'twin.write_actor(), twin.write_run(), %s, %s FROM old_rows o ORDER BY o.fid',
                       layer, old_props, format(geom_of, 'o'));
    END IF;
    GET DIAGNOSTICS recorded = ROW_COUNT;
    IF recorded > 0 THEN
        PERFORM pg_notify('twin_change', layer);  -- delivered at commit: caches listen and evict
    END IF;
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
        # as of a moment within a box, the usual past read, is one scan of a two-column GiST
        columns = "valid, geom" if name in SPATIAL else "valid"
        op.execute(f"CREATE INDEX {name}_valid_idx ON history.{name} USING gist ({columns})")
        kind = "'spatial'" if name in SPATIAL else ""
        op.execute(f"CREATE TRIGGER begin_change BEFORE INSERT OR UPDATE OR DELETE ON layers.{name} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION twin.begin_change()")
        op.execute(f"CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON layers.{name} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION twin.refuse_truncate()")
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
        for trigger in ("begin_change", "refuse_truncate", "stamp_insert", "bump_version", "record_insert",
                        "record_update", "record_delete"):
            op.execute(f"DROP TRIGGER {trigger} ON layers.{name}")
        op.execute(f"DROP TABLE history.{name}")
    op.execute("DROP FUNCTION twin.record_changes(), twin.write_run(), twin.write_actor(), "
               "twin.stamp_insert(), twin.bump_version(), twin.refuse_truncate(), twin.begin_change(), "
               "twin.change_time(), twin.claim_change_log(), twin.properties_json(regclass, text)")
    op.execute("DROP TABLE twin.change")
    op.execute("DROP SCHEMA history")
