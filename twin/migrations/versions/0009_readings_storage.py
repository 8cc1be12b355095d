"""Storage of water-quality readings for time-range queries at scale.

The layer's unique btree (station_code, observed_at) answers one station's range; queries across
stations by time (a day of every station, the viewer's newest classified readings) scanned the
whole table. A btree on observed_at answers them whatever the rows' physical order; BRIN needs
time-ordered rows (a bulk load of a station-by-station file is not) and cannot serve ORDER BY, and
monthly partitions gained nothing here while costing the fid lookups and the unique key
(measurements: docs/benchmarks.md, "Readings storage").

Revision ID: 0009
Revises: 0008
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("water_quality_observed_at_idx", "water_quality", ["observed_at"], schema="layers")


def downgrade() -> None:
    op.drop_index("water_quality_observed_at_idx", table_name="water_quality", schema="layers")
