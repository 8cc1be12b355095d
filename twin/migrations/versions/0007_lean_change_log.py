"""A lean change log: a change row says who changed which version of a feature, when, and where.

Migration 0003 stored in every `twin.change` row the feature's properties (as JSON, built per row)
and geometry before and after: most of the cost of a tracked write. The versions themselves
already hold all of it, so a change row now keeps only its envelope of the geometry before and
after (tile invalidation needs those without a join); the content of version v of a feature is
the current row if its version is v, else `history.<layer>` row (fid, v); what came before a
change is history version v - 1 (see `layers.changelog`).

So an insert writes one small change row; an update or a delete copies the superseded row to
the history (as before) and writes one small change row. Per statement, actor, run and moment
are read once; no ORDER BY (one change per feature per statement, so their order within a
statement means nothing). `twin.change` keeps one btree for a feature's versions; the time and
run lookups, whose values grow with change_id (writers are serialised), share one BRIN index.

A new feature's time becomes a column default (version already defaults to 1): the per-row `stamp_insert` trigger
(PL/pgSQL, the larger part of the cost of an untracked insert) now fires only for a row that
brings its own version or time (a restore, or a DBA's INSERT), which it corrects as before.

Revision ID: 0007
Revises: 0006
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

LAYERS = ["city_components", "districts", "grids", "metro_lines", "metro_stations", "monitoring_stations",
          "pollution_sources", "rivers", "roads", "streets", "water_bodies", "water_quality"]

LEAN = r"""
CREATE OR REPLACE FUNCTION twin.record_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    layer text := TG_TABLE_NAME;
    envelope text := CASE WHEN TG_NARGS > 0 AND TG_ARGV[0] = 'spatial' THEN 'ST_Envelope(%s.geom)'
                          ELSE 'NULL::geometry' END;
    actor text := twin.write_actor();
    run bigint := twin.write_run();
    moment timestamptz := twin.change_time();
    recorded bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO twin.change (layer, fid, operation, version, changed_at, actor, run_id, bbox_after) '
                       'SELECT $1, n.fid, ''insert'', n.version, n.updated_at, $2, $3, %s FROM new_rows n',
                       format(envelope, 'n'))
            USING layer, actor, run;
    ELSIF TG_OP = 'UPDATE' THEN
        EXECUTE format('INSERT INTO history.%I SELECT o.*, tstzrange(o.updated_at, n.updated_at) '
                       'FROM old_rows o JOIN new_rows n USING (fid)', layer);
        EXECUTE format('INSERT INTO twin.change (layer, fid, operation, version, changed_at, actor, run_id, '
                       'bbox_before, bbox_after) '
                       'SELECT $1, n.fid, ''update'', n.version, n.updated_at, $2, $3, %s, %s '
                       'FROM old_rows o JOIN new_rows n USING (fid)', format(envelope, 'o'), format(envelope, 'n'))
            USING layer, actor, run;
    ELSE  -- the moment is not upper(valid): a feature deleted in the transaction that made it has an empty range
        EXECUTE format('WITH moved AS (INSERT INTO history.%I SELECT o.*, tstzrange(o.updated_at, '
                       'greatest($4, o.updated_at)) FROM old_rows o '
                       'RETURNING fid, version, greatest($4, updated_at) AS until, %s AS bbox) '
                       'INSERT INTO twin.change (layer, fid, operation, version, changed_at, actor, run_id, bbox_before) '
                       'SELECT $1, fid, ''delete'', version + 1, until, $2, $3, bbox FROM moved',
                       layer, replace(envelope, '%s.', ''))
            USING layer, actor, run, moment;
    END IF;
    GET DIAGNOSTICS recorded = ROW_COUNT;
    IF recorded > 0 THEN
        PERFORM pg_notify('twin_change', layer);  -- delivered at commit: caches listen and evict
    END IF;
    RETURN NULL;
END $$;
"""

# Migration 0003's function as it ran, restored on downgrade (a migration keeps its own DDL, never imports another's).
FULL = r"""
CREATE OR REPLACE FUNCTION twin.record_changes() RETURNS trigger LANGUAGE plpgsql AS $$
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

# Fills the 0003 columns back in from the versions, layer by layer, before the lean columns go.
BACKFILL = r"""
DO $$
DECLARE
    layer text;
    spatial boolean;
    versions text;
    names text;
BEGIN
    FOREACH layer IN ARRAY %(layers)s LOOP
        spatial := EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = format('layers.%%I', layer)::regclass
                           AND attname = 'geom' AND NOT attisdropped);
        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO names FROM pg_attribute
        WHERE attrelid = format('layers.%%I', layer)::regclass AND attnum > 0 AND NOT attisdropped;
        versions := format('(SELECT %%s FROM layers.%%I UNION ALL SELECT %%s FROM history.%%I)', names, layer,
                           names, layer);
        EXECUTE format('UPDATE twin.change c SET after = %%s, geom_after = %%s FROM %%s a '
                       'WHERE c.layer = %%L AND c.operation <> ''delete'' AND a.fid = c.fid AND a.version = c.version',
                       twin.properties_json(format('layers.%%I', layer)::regclass, 'a'),
                       CASE WHEN spatial THEN 'a.geom' ELSE 'NULL' END, versions, layer);
        EXECUTE format('UPDATE twin.change c SET before = %%s, geom_before = %%s FROM history.%%I b '
                       'WHERE c.layer = %%L AND c.operation <> ''insert'' AND b.fid = c.fid '
                       'AND b.version = c.version - 1',
                       twin.properties_json(format('layers.%%I', layer)::regclass, 'b'),
                       CASE WHEN spatial THEN 'b.geom' ELSE 'NULL' END, layer, layer);
    END LOOP;
END $$;
"""


def upgrade() -> None:
    op.execute("ALTER TABLE twin.change ADD COLUMN bbox_before geometry, ADD COLUMN bbox_after geometry")
    op.execute("UPDATE twin.change SET bbox_before = ST_Envelope(geom_before), bbox_after = ST_Envelope(geom_after) "
               "WHERE geom_before IS NOT NULL OR geom_after IS NOT NULL")
    op.execute("ALTER TABLE twin.change DROP COLUMN before, DROP COLUMN after, DROP COLUMN geom_before, "
               "DROP COLUMN geom_after")
    op.execute("DROP INDEX twin.change_layer_time_idx, twin.change_run_idx")
    op.execute("CREATE INDEX change_time_run_brin ON twin.change USING brin (changed_at, run_id)")
    op.execute(LEAN)
    for name in LAYERS:
        op.execute(f"ALTER TABLE layers.{name} ALTER updated_at SET DEFAULT twin.change_time()")
        op.execute(f"DROP TRIGGER stamp_insert ON layers.{name}")
        op.execute(f"CREATE TRIGGER stamp_insert BEFORE INSERT ON layers.{name} FOR EACH ROW "
                   "WHEN (NEW.version IS DISTINCT FROM 1 OR NEW.updated_at IS DISTINCT FROM twin.change_time()) "
                   "EXECUTE FUNCTION twin.stamp_insert()")


def downgrade() -> None:
    for name in LAYERS:
        op.execute(f"DROP TRIGGER stamp_insert ON layers.{name}")
        op.execute(f"CREATE TRIGGER stamp_insert BEFORE INSERT ON layers.{name} FOR EACH ROW "
                   "EXECUTE FUNCTION twin.stamp_insert()")
        op.execute(f"ALTER TABLE layers.{name} ALTER updated_at SET DEFAULT now()")
    op.execute(FULL)
    op.execute("DROP INDEX twin.change_time_run_brin")
    op.execute("CREATE INDEX change_layer_time_idx ON twin.change (layer, changed_at)")
    op.execute("CREATE INDEX change_run_idx ON twin.change (run_id) WHERE run_id IS NOT NULL")
    op.execute("ALTER TABLE twin.change ADD COLUMN before jsonb, ADD COLUMN after jsonb, "
               "ADD COLUMN geom_before geometry, ADD COLUMN geom_after geometry")
    op.execute(BACKFILL % {"layers": "ARRAY[" + ", ".join(f"'{name}'" for name in LAYERS) + "]"})
    op.execute("ALTER TABLE twin.change DROP COLUMN bbox_before, DROP COLUMN bbox_after")
