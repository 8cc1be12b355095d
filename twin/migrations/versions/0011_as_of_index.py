"""An index on each layer's `updated_at`, so a read as of a past moment skips the rows changed since.

The layer as of a moment t (`layers.tables.layer_at`) is the current rows with updated_at <= t plus the
history rows valid at t. Without this index the current part finds every current row in the box
through the geometry index and fetches each only to drop the ones changed after t: as dear as the
whole current read. With it the planner combines the two indexes (or, when few rows are that old,
uses this one alone) and fetches only rows that were already current at t.

A btree rather than BRIN: BRIN would be cheaper to keep but serves only while recently changed rows
sit in pages of their own, which vacuum undoes as updates refill freed space; the btree costs about
1 µs of server CPU per written row (3% of a tracked update, whose dearest part is the history's GiST).
`water_quality` is left out: its as-of reads go by station and time through its own indexes, and
readings arrive in bulk at a rate where every index counts.

The history keeps its GiST (valid, geom). For a box at a moment it read 178 index pages where a GiST
(geom, valid) read 1,412 and an n-D GiST on each row's box × validity (`&&&`) 739 (200,000 features ×
10 versions), and the n-D one serves only a query that repeats the box inside the history branch,
which the callers of `layer_at()` do not write (docs/benchmarks.md, "Change tracking").

Revision ID: 0011
Revises: 0010
"""
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

LAYERS = ["city_components", "districts", "grids", "metro_lines", "metro_stations", "monitoring_stations",
          "pollution_sources", "rivers", "roads", "streets", "water_bodies"]


def upgrade() -> None:
    for name in LAYERS:
        op.create_index(f"{name}_updated_at_idx", name, ["updated_at"], schema="layers")


def downgrade() -> None:
    for name in LAYERS:
        op.drop_index(f"{name}_updated_at_idx", table_name=name, schema="layers")
