"""ETL run accounting: the stage a run is in, the CRS and source layer it was asked for,
the source columns it ignored, and the rows whose geometry it repaired.

A run still 'running' whose process died is found by its advisory lock (held by the
run's own database session until it ends), so no process ids are stored.

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE twin.etl_run ADD COLUMN stage text, ADD COLUMN crs text, ADD COLUMN source_layer text, "
               "ADD COLUMN ignored_columns text[] NOT NULL DEFAULT '{}'")
    op.execute("""
        CREATE TABLE twin.etl_repair (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            run_id bigint NOT NULL REFERENCES twin.etl_run(id) ON DELETE CASCADE,
            layer text NOT NULL,
            row_number integer,
            record jsonb NOT NULL,
            reason text NOT NULL
        )""")
    op.execute("CREATE INDEX etl_repair_run_idx ON twin.etl_repair (run_id)")
    op.execute("CREATE INDEX etl_run_running_idx ON twin.etl_run (id) WHERE status = 'running'")


def downgrade() -> None:
    op.execute("DROP TABLE twin.etl_repair")
    op.execute("DROP INDEX twin.etl_run_running_idx")
    op.execute("ALTER TABLE twin.etl_run DROP COLUMN stage, DROP COLUMN crs, DROP COLUMN source_layer, "
               "DROP COLUMN ignored_columns")
