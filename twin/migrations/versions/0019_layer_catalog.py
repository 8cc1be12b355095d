"""The layer catalog in the database (issue 23): layers are data, registered at run time.

- `twin.layer`: one row a layer, its spec (the schema of `layers.catalog.LayerSpec`) and its state:
  `active`, or `archived` (removed from the map; its table, history and change log are kept, and it may be
  restored). `shipped` marks the layers that ship with the project (`layers/specs/*.toml`, registered by
  `twin db upgrade` through `layers.registry.ship`).
- `twin.layer_version`: every version of every spec, with the DDL that made it so (`layers.ddl`), who and
  when: the database alone says how each layer table came to be, so a backup restores registered layers too.
- `twin.layer_style`: a registered layer's MapLibre style (a default one made from its spec; its owner may
  replace it), served by layers.styles like the files in `styles/`.
- A change to `twin.layer` is announced on `twin_layers`: every server process follows it (layers.following)
  and reloads the catalog at once.

Revision ID: 0019
Revises: 0018
"""
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

TABLES = r"""
CREATE TABLE twin.layer (
    id text PRIMARY KEY,
    spec jsonb NOT NULL,
    version integer NOT NULL,
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'archived')),
    shipped boolean NOT NULL DEFAULT false,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE twin.layer_version (
    layer text NOT NULL REFERENCES twin.layer (id),
    version integer NOT NULL,
    spec jsonb NOT NULL,
    change text NOT NULL CHECK (change IN ('adopt', 'register', 'change', 'archive', 'restore')),
    ddl text[] NOT NULL DEFAULT '{}',
    note text,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (layer, version)
);

CREATE TABLE twin.layer_style (
    name text PRIMARY KEY,
    style jsonb NOT NULL,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION twin.announce_catalog() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('twin_layers', '');
    RETURN NULL;
END $$;

CREATE TRIGGER announce_catalog AFTER INSERT OR UPDATE OR DELETE ON twin.layer
    FOR EACH STATEMENT EXECUTE FUNCTION twin.announce_catalog();
"""


# History rows are written by column name, not position: a field added at run time goes to the end of both the
# layer table and its history table (after `valid`), and a dropped field stays in history with its old values.
COLUMNS = r"""
CREATE FUNCTION twin.layer_columns(layer regclass, prefix text DEFAULT '') RETURNS text LANGUAGE sql STABLE AS $$
    SELECT string_agg(prefix || quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
    WHERE attrelid = layer AND attnum > 0 AND NOT attisdropped
$$;
"""
BY_NAME = r"""
CREATE OR REPLACE FUNCTION twin.record_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    layer text := TG_TABLE_NAME;
    envelope text := CASE WHEN TG_NARGS > 0 AND TG_ARGV[0] = 'spatial' THEN 'ST_Envelope(%s.geom)'
                          ELSE 'NULL::geometry' END;
    actor text := twin.write_actor();
    run bigint := twin.write_run();
    moment timestamptz := twin.change_time();
    columns text;
    recorded bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO twin.change (layer, fid, operation, version, changed_at, actor, run_id, bbox_after) '
                       'SELECT $1, n.fid, ''insert'', n.version, n.updated_at, $2, $3, %s FROM new_rows n',
                       format(envelope, 'n'))
            USING layer, actor, run;
    ELSIF TG_OP = 'UPDATE' THEN
        columns := twin.layer_columns(TG_RELID);
        EXECUTE format('INSERT INTO history.%I (%s, valid) SELECT %s, tstzrange(o.updated_at, n.updated_at) '
                       'FROM old_rows o JOIN new_rows n USING (fid)', layer, columns,
                       twin.layer_columns(TG_RELID, 'o.'));
        EXECUTE format('INSERT INTO twin.change (layer, fid, operation, version, changed_at, actor, run_id, '
                       'bbox_before, bbox_after) '
                       'SELECT $1, n.fid, ''update'', n.version, n.updated_at, $2, $3, %s, %s '
                       'FROM old_rows o JOIN new_rows n USING (fid)', format(envelope, 'o'), format(envelope, 'n'))
            USING layer, actor, run;
    ELSE  -- the moment is not upper(valid): a feature deleted in the transaction that made it has an empty range
        columns := twin.layer_columns(TG_RELID);
        EXECUTE format('WITH moved AS (INSERT INTO history.%I (%s, valid) SELECT %s, tstzrange(o.updated_at, '
                       'greatest($4, o.updated_at)) FROM old_rows o '
                       'RETURNING fid, version, greatest($4, updated_at) AS until, %s AS bbox) '
                       'INSERT INTO twin.change (layer, fid, operation, version, changed_at, actor, run_id, bbox_before) '
                       'SELECT $1, fid, ''delete'', version + 1, until, $2, $3, bbox FROM moved',
                       layer, columns, twin.layer_columns(TG_RELID, 'o.'), replace(envelope, '%s.', ''))
            USING layer, actor, run, moment;
    END IF;
    GET DIAGNOSTICS recorded = ROW_COUNT;
    IF recorded > 0 THEN
        PERFORM pg_notify('twin_change', layer);  -- delivered at commit: caches listen and evict
    END IF;
    RETURN NULL;
END $$;
"""
BY_POSITION = r"""
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


def upgrade() -> None:
    op.execute(TABLES)
    op.execute(COLUMNS)
    op.execute(BY_NAME)


# Layers registered at run time have no migration to take them away: going below this revision drops them, their
# history and change log, as every downgrade drops what its upgrade made (back up first: twin db backup).
DROP_REGISTERED = r"""
DO $$
DECLARE
    made text;
BEGIN
    FOR made IN SELECT DISTINCT layer FROM twin.layer_version WHERE change = 'register' LOOP
        EXECUTE format('DROP TABLE IF EXISTS layers.%I, history.%I', made, made);
        DELETE FROM twin.feature_count WHERE layer = made;
        DELETE FROM twin.tile_cell WHERE layer = made;
        DELETE FROM twin.change WHERE layer = made;
    END LOOP;
END $$;
"""


def downgrade() -> None:
    op.execute(DROP_REGISTERED)
    op.execute(BY_POSITION)
    op.execute("DROP FUNCTION twin.layer_columns(regclass, text)")
    op.execute("DROP TABLE twin.layer_style, twin.layer_version, twin.layer")
    op.execute("DROP FUNCTION twin.announce_catalog()")
