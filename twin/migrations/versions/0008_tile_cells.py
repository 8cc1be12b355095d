"""Maintained per-cell point counts for low-zoom tiles.

A dense point layer's low-zoom tiles are clusters: per cell of a 16x16 grid over the tile, the points
counted at their mean position with the most common category. Counting a million points per tile
took a second or more; `twin.tile_cell` keeps the counts instead, per fine cell of the Web Mercator
world cut into 2^17 x 2^17 cells (the cluster cells of a zoom-13 tile; a cluster cell of a tile at
zoom z <= 13 is a 2^(13-z) square block of them), per category, with the sums of the points'
Web Mercator coordinates, so a tile reads a few thousand rows and sums them by its coarser cell.

The counts are kept by statement-level triggers with transition tables on the layer, in the writing
transaction: a tile can never see counts that disagree with the layer, and the tile cache is still
invalidated through the change log. One upsert per writing statement (the statement's points
grouped by cell: +1 for each new row, -1 for each old one), then emptied cells go.

Revision ID: 0008
Revises: 0007
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# layer → the field a cluster reports (tiles.sources.category)
LAYERS = {"city_components": "status"}
HALF_WORLD = 20037508.342789244  # Web Mercator's half extent in metres
LEVEL = 17  # 2^LEVEL cells across the world (tiles.sources.CELL_LEVEL)

# A point's Web Mercator x and y (`%1$s.geom` in EPSG:4490, whose axes CGCS2000 shares with WGS84 to well
# under a millimetre), by the spherical formulas: half the cost of ST_Transform, within 1e-8 m of it.
MERCATOR = (f"ST_X(%1$s.geom) * {HALF_WORLD} / 180",
            f"ln(tan(pi() / 4 + radians(ST_Y(%1$s.geom)) / 2)) * {HALF_WORLD} / pi()")
# Of a point: its fine cell (column from the world's west edge, row from its north edge), category, x and y.
CELL = (f"floor(({MERCATOR[0]} + {HALF_WORLD}) / (2 * {HALF_WORLD} / 2 ^ {LEVEL}))::int, "
        f"floor(({HALF_WORLD} - {MERCATOR[1]}) / (2 * {HALF_WORLD} / 2 ^ {LEVEL}))::int, "
        f"%1$s.category, {MERCATOR[0]}, {MERCATOR[1]}")

FUNCTIONS = r"""
CREATE TABLE twin.tile_cell (
    layer text NOT NULL,
    cx integer NOT NULL,  -- column from the world's west edge
    cy integer NOT NULL,  -- row from the world's north edge
    category text NOT NULL DEFAULT '',
    points bigint NOT NULL,
    sum_x double precision NOT NULL,  -- of the points' Web Mercator coordinates
    sum_y double precision NOT NULL,
    PRIMARY KEY (layer, cx, cy, category)
);

-- TG_ARGV[0]: the category column. Points moved from old_rows (-1) and to new_rows (+1), by cell.
CREATE FUNCTION twin.count_tile_cells() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    rows_of text := 'SELECT geom, coalesce(%I::text, '''') AS category, %s AS sign '
                   'FROM %s WHERE geom IS NOT NULL';
    moved text;
BEGIN
    moved := CASE TG_OP
        WHEN 'INSERT' THEN format(rows_of, TG_ARGV[0], 1, 'new_rows')
        WHEN 'DELETE' THEN format(rows_of, TG_ARGV[0], -1, 'old_rows')
        ELSE format(rows_of, TG_ARGV[0], 1, 'new_rows') || ' UNION ALL ' || format(rows_of, TG_ARGV[0], -1, 'old_rows')
    END;
    EXECUTE format(
        'INSERT INTO twin.tile_cell AS t (layer, cx, cy, category, points, sum_x, sum_y) '
        'SELECT $1, cx, cy, category, sum(sign), sum(sign * x), sum(sign * y) FROM ('
        '  SELECT %s, p.sign FROM (%s) p) c (cx, cy, category, x, y, sign) '
        'GROUP BY cx, cy, category HAVING sum(sign) <> 0 OR sum(sign * x) <> 0 OR sum(sign * y) <> 0 '
        'ON CONFLICT (layer, cx, cy, category) DO UPDATE SET points = t.points + excluded.points, '
        'sum_x = t.sum_x + excluded.sum_x, sum_y = t.sum_y + excluded.sum_y',
        format('%CELL%', 'p'), moved) USING TG_TABLE_NAME;
    DELETE FROM twin.tile_cell t WHERE t.layer = TG_TABLE_NAME AND t.points = 0;
    RETURN NULL;
END $$;
""".replace("%CELL%", CELL)


def upgrade() -> None:
    op.execute(FUNCTIONS)
    op.execute("CREATE INDEX tile_cell_empty_idx ON twin.tile_cell (layer) WHERE points = 0")
    for layer, category in LAYERS.items():
        op.execute(f"INSERT INTO twin.tile_cell (layer, cx, cy, category, points, sum_x, sum_y) "
                   f"SELECT '{layer}', cx, cy, category, count(*), sum(x), sum(y) FROM ("
                   f"  SELECT {CELL.replace('%1$s', 'p')} FROM (SELECT geom, "
                   f"  coalesce({category}::text, '') AS category FROM layers.{layer} WHERE geom IS NOT NULL) p"
                   ") c (cx, cy, category, x, y) GROUP BY cx, cy, category")
        for operation, tables in (("INSERT", "NEW TABLE AS new_rows"),
                                  ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                                  ("DELETE", "OLD TABLE AS old_rows")):
            op.execute(f"CREATE TRIGGER count_tile_cells_{operation.lower()} AFTER {operation} ON layers.{layer} "
                       f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION twin.count_tile_cells('{category}')")
    op.execute("ANALYZE twin.tile_cell")


def downgrade() -> None:
    for layer in LAYERS:
        for operation in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER count_tile_cells_{operation} ON layers.{layer}")
    op.execute("DROP FUNCTION twin.count_tile_cells()")
    op.execute("DROP TABLE twin.tile_cell")
