"""Private layers: which layers an admin switched private or public.

A layer's privacy defaults to its spec (`private = true`); a row here overrides it. Every change
is announced on channel `twin_access`, so each server process follows it at once (twin.access).

Revision ID: 0006
Revises: 0005
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE twin.layer_access (
            layer text PRIMARY KEY,
            private boolean NOT NULL,
            changed_at timestamptz NOT NULL DEFAULT now(),
            changed_by text NOT NULL
        )""")
    op.execute("""
        CREATE FUNCTION twin.announce_layer_access() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('twin_access', '');
            RETURN NULL;
        END $$""")
    op.execute("CREATE TRIGGER layer_access_announce AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
               "ON twin.layer_access FOR EACH STATEMENT EXECUTE FUNCTION twin.announce_layer_access()")


def downgrade() -> None:
    op.execute("DROP TABLE twin.layer_access")
    op.execute("DROP FUNCTION twin.announce_layer_access()")
