"""The drainage network (issue 22): pipes, manholes, pump stations, treatment plants, outfalls and
gates, tracked like every layer, and the graph pgRouting traces.

Each layer table gets what migrations 0002 (table, geometry index), 0003/0007 (history and change
triggers), 0011 (as-of index) and 0012 (feature count) gave the built-in layers.

The graph (`twin.drainage_node`, `twin.drainage_edge`) is derived from the layers by
`layers.drainage_graph.rebuild`: rivers, outfalls, pipes and the nodes between them, in pgRouting's
edge-table form (cost, reverse_cost −1 for one way). `component` partitions it so a trace reads only
the part of the graph that can matter: the weakly connected pieces of the gravity pipes, each river
edge, each other node alone; `twin.drainage_component_edge` is the small graph of those parts
(pressure mains, links to rivers, river edges). `twin.drainage_graph` holds what the graph was
built from, so a trace rebuilds it when the layers have changed.

Revision ID: 0017
Revises: 0016
"""
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

TABLES = {
    "pipes": [
        '"code" text NOT NULL',
        '"kind" text',
        '"flow_type" text',
        '"from_code" text',
        '"to_code" text',
        '"direction" text',
        '"diameter_mm" double precision',
        '"material" text',
        '"from_invert_m" double precision',
        '"to_invert_m" double precision',
        '"flags" text',
        'geom geometry(MultiLineString, 4490) NOT NULL',
    ],
    "manholes": [
        '"code" text NOT NULL',
        '"kind" text',
        '"ground_m" double precision',
        '"depth_m" double precision',
        '"component_code" text',
        'geom geometry(Point, 4490) NOT NULL',
    ],
    "pump_stations": [
        '"code" text NOT NULL',
        '"name" text',
        '"kind" text',
        '"capacity_m3h" double precision',
        '"status" text',
        'geom geometry(Point, 4490) NOT NULL',
    ],
    "treatment_plants": [
        '"code" text NOT NULL',
        '"name" text',
        '"capacity_m3d" double precision',
        '"standard" text',
        'geom geometry(Point, 4490) NOT NULL',
    ],
    "outfalls": [
        '"code" text NOT NULL',
        '"name" text',
        '"kind" text',
        '"river_code" text',
        '"diameter_mm" double precision',
        'geom geometry(Point, 4490) NOT NULL',
    ],
    "gates": [
        '"code" text NOT NULL',
        '"name" text',
        '"gate_type" text',
        '"node_code" text',
        '"river_code" text',
        'geom geometry(Point, 4490) NOT NULL',
    ],
}


def _tracked(name: str) -> None:
    op.execute(f"CREATE TABLE history.{name} (LIKE layers.{name}, valid tstzrange NOT NULL)")
    op.execute(f"CREATE INDEX {name}_fid_idx ON history.{name} (fid, version)")
    op.execute(f"CREATE INDEX {name}_valid_idx ON history.{name} USING gist (valid, geom)")
    op.execute(f"CREATE TRIGGER begin_change BEFORE INSERT OR UPDATE OR DELETE ON layers.{name} "
               "FOR EACH STATEMENT EXECUTE FUNCTION twin.begin_change()")
    op.execute(f"CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON layers.{name} "
               "FOR EACH STATEMENT EXECUTE FUNCTION twin.refuse_truncate()")
    op.execute(f"CREATE TRIGGER stamp_insert BEFORE INSERT ON layers.{name} FOR EACH ROW "
               "WHEN (NEW.version IS DISTINCT FROM 1 OR NEW.updated_at IS DISTINCT FROM twin.change_time()) "
               "EXECUTE FUNCTION twin.stamp_insert()")
    op.execute(f"CREATE TRIGGER bump_version BEFORE UPDATE ON layers.{name} "
               "FOR EACH ROW EXECUTE FUNCTION twin.bump_version()")
    for operation, tables in (("INSERT", "NEW TABLE AS new_rows"),
                              ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                              ("DELETE", "OLD TABLE AS old_rows")):
        op.execute(f"CREATE TRIGGER record_{operation.lower()} AFTER {operation} ON layers.{name} "
                   f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION twin.record_changes('spatial')")
    op.execute(f"INSERT INTO twin.feature_count VALUES ('{name}', 0)")
    for operation, table in (("INSERT", "NEW TABLE AS new_rows"), ("DELETE", "OLD TABLE AS old_rows")):
        op.execute(f"CREATE TRIGGER count_features_{operation.lower()} AFTER {operation} ON layers.{name} "
                   f"REFERENCING {table} FOR EACH STATEMENT EXECUTE FUNCTION twin.count_features()")


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pgrouting")
    for name, columns in TABLES.items():
        op.execute(f"CREATE TABLE layers.{name} (\n    fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n    "
                   + ",\n    ".join(columns) + ",\n    version integer NOT NULL DEFAULT 1,\n    "
                   "updated_at timestamptz NOT NULL DEFAULT twin.change_time(),\n    UNIQUE (code)\n)")
        op.execute(f"CREATE INDEX {name}_geom_idx ON layers.{name} USING gist (geom)")
        op.execute(f"CREATE INDEX {name}_updated_at_idx ON layers.{name} (updated_at)")
        _tracked(name)
    op.execute("CREATE INDEX pipes_from_code_idx ON layers.pipes (from_code)")
    op.execute("CREATE INDEX pipes_to_code_idx ON layers.pipes (to_code)")
    op.execute("""
        CREATE TABLE twin.drainage_node (
            id bigint PRIMARY KEY,
            layer text NOT NULL,
            fid bigint,
            code text,
            component bigint NOT NULL
        )""")
    op.execute("CREATE INDEX drainage_node_feature_idx ON twin.drainage_node (layer, fid)")
    op.execute("""
        CREATE TABLE twin.drainage_edge (
            id bigint PRIMARY KEY,
            source bigint NOT NULL,
            target bigint NOT NULL,
            cost double precision NOT NULL,
            reverse_cost double precision NOT NULL,
            layer text NOT NULL,
            fid bigint,
            component bigint NOT NULL
        )""")
    op.execute("CREATE INDEX drainage_edge_component_idx ON twin.drainage_edge (component)")
    op.execute("CREATE INDEX drainage_edge_source_idx ON twin.drainage_edge (source)")
    op.execute("CREATE INDEX drainage_edge_target_idx ON twin.drainage_edge (target)")
    op.execute("CREATE INDEX drainage_edge_feature_idx ON twin.drainage_edge (layer, fid)")
    op.execute("""
        CREATE TABLE twin.drainage_component_edge (
            id bigint PRIMARY KEY,
            source bigint NOT NULL,
            target bigint NOT NULL,
            cost double precision NOT NULL,
            reverse_cost double precision NOT NULL
        )""")
    op.execute("""
        CREATE TABLE twin.drainage_graph (
            only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
            fingerprint text NOT NULL,
            built_at timestamptz NOT NULL DEFAULT now()
        )""")


def downgrade() -> None:
    op.execute("DROP TABLE twin.drainage_graph, twin.drainage_component_edge, twin.drainage_edge, "
               "twin.drainage_node")
    for name in TABLES:
        op.execute(f"DELETE FROM twin.feature_count WHERE layer = '{name}'")
        op.execute(f"DROP TABLE history.{name}")
        op.execute(f"DROP TABLE layers.{name}")
    op.execute("DROP EXTENSION IF EXISTS pgrouting")
