"""Each layer's feature count, kept by the database as features are inserted and deleted.

An unfiltered items page reports `numberMatched` at any size (QGIS and GDAL show it, and GDAL's
GetFeatureCount otherwise walks every page), so the count is read from one row instead of counted.
Statement-level AFTER INSERT and AFTER DELETE triggers add the sizes of their transition tables, so
every write path (ETL, API, a DBA's SQL) keeps it and bulk loads pay once per statement. Writers to the
layers are already serialised by the change log's advisory lock (0003), so the one row per layer adds
no contention. Updates do not change a count and TRUNCATE is refused (0003). The function runs with its
owner's rights, as 0005's begin_change does, so any role allowed to write a layer keeps the count.

Revision ID: 0012
Revises: 0011
"""
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

LAYERS = ["city_components", "districts", "grids", "metro_lines", "metro_stations", "monitoring_stations",
          "pollution_sources", "rivers", "roads", "streets", "water_bodies", "water_quality"]

FUNCTION = r"""
CREATE FUNCTION twin.count_features() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE twin.feature_count SET features = features + (SELECT count(*) FROM new_rows)
        WHERE layer = TG_TABLE_NAME;
    ELSE
        UPDATE twin.feature_count SET features = features - (SELECT count(*) FROM old_rows)
        WHERE layer = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END $$;
"""


def upgrade() -> None:
    op.execute("CREATE TABLE twin.feature_count (layer text PRIMARY KEY, features bigint NOT NULL)")
    op.execute(FUNCTION)
    for name in LAYERS:
        op.execute(f"LOCK TABLE layers.{name} IN SHARE MODE")  # no write between the count and the triggers
        op.execute(f"INSERT INTO twin.feature_count SELECT '{name}', count(*) FROM layers.{name}")
        for operation, table in (("INSERT", "NEW TABLE AS new_rows"), ("DELETE", "OLD TABLE AS old_rows")):
            op.execute(f"CREATE TRIGGER count_features_{operation.lower()} AFTER {operation} ON layers.{name} "
                       f"REFERENCING {table} FOR EACH STATEMENT EXECUTE FUNCTION twin.count_features()")


def downgrade() -> None:
    for name in LAYERS:
        for operation in ("insert", "delete"):
            op.execute(f"DROP TRIGGER count_features_{operation} ON layers.{name}")
    op.execute("DROP FUNCTION twin.count_features()")
    op.execute("DROP TABLE twin.feature_count")
