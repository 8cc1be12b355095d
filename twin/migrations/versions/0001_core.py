"""Core metadata: PostGIS, the twin and layers schemas, API keys, ETL runs and quarantine.

Revision ID: 0001
Revises:
"""
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.execute("CREATE SCHEMA IF NOT EXISTS twin")
    op.execute("CREATE SCHEMA IF NOT EXISTS layers")
    op.execute("""
        CREATE TABLE twin.api_key (
            id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            prefix text NOT NULL UNIQUE,
            secret_hash text NOT NULL,
            department text NOT NULL,
            layers text[] NOT NULL DEFAULT '{}',
            is_admin boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz
        )""")
    op.execute("""
        CREATE TABLE twin.etl_run (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            job text NOT NULL,
            layer text NOT NULL,
            mode text NOT NULL CHECK (mode IN ('upsert', 'replace')),
            file_name text,
            file_sha256 text,
            department text,
            actor text NOT NULL,
            status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
            started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            finished_at timestamptz,
            read integer NOT NULL DEFAULT 0,
            inserted integer NOT NULL DEFAULT 0,
            updated integer NOT NULL DEFAULT 0,
            unchanged integer NOT NULL DEFAULT 0,
            deleted integer NOT NULL DEFAULT 0,
            repaired integer NOT NULL DEFAULT 0,
            quarantined integer NOT NULL DEFAULT 0,
            error text
        )""")
    op.execute("""
        CREATE TABLE twin.quarantine (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            run_id bigint NOT NULL REFERENCES twin.etl_run(id) ON DELETE CASCADE,
            layer text NOT NULL,
            source_file text,
            row_number integer,
            record jsonb NOT NULL,
            reason text NOT NULL
        )""")
    op.execute("CREATE INDEX quarantine_run_idx ON twin.quarantine (run_id)")
    op.execute("""
        CREATE TABLE twin.raster_source (
            layer text PRIMARY KEY,
            path text NOT NULL,
            file_sha256 text NOT NULL,
            run_id bigint REFERENCES twin.etl_run(id),
            registered_at timestamptz NOT NULL DEFAULT now()
        )""")


def downgrade() -> None:
    op.execute("DROP TABLE twin.raster_source")
    op.execute("DROP TABLE twin.quarantine")
    op.execute("DROP TABLE twin.etl_run")
    op.execute("DROP TABLE twin.api_key")
    op.execute("DROP SCHEMA layers")
    op.execute("DROP SCHEMA twin")
