"""The layer catalog in the database (issue 23): layers are data, registered at run time.

- `twin.layer`: one row a layer, its spec (the schema of `layers.catalog.LayerSpec`) and its state:
  `active`, or `archived` (removed from the map; its table, history and change log are kept, and it may be
  restored). `shipped` marks the layers that ship with the project (`layers/specs/*.toml`, registered by
  `twin db upgrade` through `layers.registry.ship`).
- `twin.layer_version`: every version of every spec, with the DDL that made it so (`layers.ddl`), who and
  when: the database alone says how each layer table came to be, so a backup restores registered layers too.
- `twin.layer_style`: a registered layer's MapLibre style (a default one made from its spec; its owner may
  replace it), served by twin.styles like the files in `styles/`.
- A change to `twin.layer` is announced on `twin_access`, the channel every server process already follows
  for layer privacy (twin.access): each reloads the catalog at once.

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
    PERFORM pg_notify('twin_access', 'catalog');
    RETURN NULL;
END $$;

CREATE TRIGGER announce_catalog AFTER INSERT OR UPDATE OR DELETE ON twin.layer
    FOR EACH STATEMENT EXECUTE FUNCTION twin.announce_catalog();
"""


def upgrade() -> None:
    op.execute(TABLES)


def downgrade() -> None:
    op.execute("DROP TABLE twin.layer_style, twin.layer_version, twin.layer")
    op.execute("DROP FUNCTION twin.announce_catalog()")
