"""Finer maintained cell counts: twin.tile_cell re-levelled from 2^17 to 2^19 cells across the world.

2^19 cells are the cluster cells of a zoom-15 tile (migration 0008 kept those of a zoom-13 tile), so dense
tiles up to zoom 15 (~50,000 points each at 10M components) are summed from the counts instead of
clustering their points per request. The trigger function's cell arithmetic is replaced at the new level
and the rows recomputed from the layers; the downgrade does the same at level 17. The layers are locked
against writes meanwhile, so no statement counts at the old level after the recount.

Revision ID: 0010
Revises: 0009
"""
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LAYERS = {"city_components": "status"}  # as in 0008: layer → the field a cluster reports
HALF_WORLD = 20037508.342789244
LEVEL, PREVIOUS = 19, 17  # 2^LEVEL cells across the world (tiles.sources.CELL_LEVEL)


def cell(level: int, row: str) -> str:
    """A point's fine cell (column from the west edge, row from the north edge), category, Web Mercator x and y,
    by the spherical formulas of 0008."""
    x = f"ST_X({row}.geom) * {HALF_WORLD} / 180"
    y = f"ln(tan(pi() / 4 + radians(ST_Y({row}.geom)) / 2)) * {HALF_WORLD} / pi()"
    size = f"(2 * {HALF_WORLD} / 2 ^ {level})"
    return (f"floor(({x} + {HALF_WORLD}) / {size})::int, floor(({HALF_WORLD} - {y}) / {size})::int, "
            f"{row}.category, {x}, {y}")


def count_function(level: int) -> str:
    """0008's trigger function with its cells at `level` (written out again: a migration keeps its own DDL and
    never imports another's, so applied migrations stay what they were)."""
    return r"""
CREATE OR REPLACE FUNCTION twin.count_tile_cells() RETURNS trigger LANGUAGE plpgsql AS $$
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
""".replace("%CELL%", cell(level, "%1$s"))


def relevel(level: int) -> None:
    for layer in LAYERS:
        op.execute(f"LOCK TABLE layers.{layer} IN SHARE MODE")
    op.execute(count_function(level))
    for layer, category in LAYERS.items():
        op.execute(f"DELETE FROM twin.tile_cell WHERE layer = '{layer}'")
        op.execute(f"INSERT INTO twin.tile_cell (layer, cx, cy, category, points, sum_x, sum_y) "
                   f"SELECT '{layer}', cx, cy, category, count(*), sum(x), sum(y) FROM ("
                   f"  SELECT {cell(level, 'p')} FROM (SELECT geom, coalesce({category}::text, '') AS category "
                   f"  FROM layers.{layer} WHERE geom IS NOT NULL) p) c (cx, cy, category, x, y) "
                   f"GROUP BY cx, cy, category")
    op.execute("ANALYZE twin.tile_cell")


def upgrade() -> None:
    relevel(LEVEL)


def downgrade() -> None:
    relevel(PREVIOUS)
