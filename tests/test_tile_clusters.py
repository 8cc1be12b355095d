"""City-component cluster tiles summed from the counts kept in twin.tile_cell (migrations 0008, 0010):
the counts agree with the layer after every write, in the writing transaction; cluster tiles summed
from them, up to dense z15 tiles, equal the clusters computed from the points (the as_of and filter
paths) and an independent count; other grids, the composite tile, errors; the migrations' downgrades."""

import math
from collections import Counter
from datetime import datetime, timezone

import httpx
import morecantile
import psycopg
import pytest
from sqlalchemy import text

from layers.catalog import get_layer
from tests.server_support import logged_server
from tests.tile_support import EXTENT, MERCATOR, TO_MERCATOR, decode, mercator_tile, points, tile_url, wait_for
from tiles.settings import TileSettings
from tiles.sources import LayerRequest, from_cells
from tiles.tms import address

HALF_WORLD = 20037508.342789244
LEVEL = 19  # 2^LEVEL cells across the world (migration 0010; 17 before it)
SPOT = (120.4123, 31.5234)  # inside the district
DENSE = 10  # the dense_points of the `dense` server: most z14 and many z15 tiles of 3000 components are dense


def fine_cell(lon: float, lat: float, level: int = LEVEL) -> tuple[int, int]:
    x, y = TO_MERCATOR.transform(lon, lat)
    size = 2 * HALF_WORLD / 2 ** level
    return math.floor((x + HALF_WORLD) / size), math.floor((HALF_WORLD - y) / size)


def cell_counts(conn) -> Counter:
    rows = conn.execute(text("SELECT cx, cy, category, points FROM twin.tile_cell WHERE layer = 'city_components'"))
    return Counter({(cx, cy, category): n for cx, cy, category, n in rows})


def layer_counts(conn) -> Counter:
    rows = conn.execute(text("SELECT ST_X(geom), ST_Y(geom), status FROM layers.city_components"))
    return Counter(fine_cell(lon, lat) + (status,) for lon, lat, status in rows)


def clusters(data: bytes) -> dict[tuple[int, int], tuple[int, str]]:
    """Cluster features of a tile by their 16x16 cell: (point_count, status)."""
    return {(int(x * 16 // EXTENT), int(y * 16 // EXTENT)): (n, status) for n, status, (x, y) in placed_clusters(data)}


def placed_clusters(data: bytes) -> list[tuple[int, str, tuple[int, int]]]:
    """Cluster features of a tile: (point_count, status, position in tile units)."""
    return [(f["properties"]["point_count"], f["properties"]["status"], tuple(f["geometry"]["coordinates"]))
            for f in decode(data)["city_components"]]


def near(placed: list, x: float, y: float) -> tuple[int, str]:
    """(point_count, status) of the one cluster within a tile unit of (x, y): positions are rounded to
    whole units, so a mean near a cell's edge may be drawn just across it."""
    found = [(n, status) for n, status, (px, py) in placed if abs(px - x) <= 1 and abs(py - y) <= 1]
    assert len(found) == 1, (x, y, placed)
    return found[0]


@pytest.fixture(scope="module")
def components(engine, loaded):
    return points(engine, "city_components")


@pytest.fixture(scope="module")
def statuses(engine, loaded) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT fid, status FROM layers.city_components")).all())


@pytest.fixture(scope="module")
def dense(loaded, database_url, data_dir):
    """A server on the same database that clusters tiles of more than DENSE points."""
    with logged_server(database_url, data_dir, data_dir / "dense-tiles.log", tile_dense_points=DENSE) as base, \
            httpx.Client(base_url=base, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def district(components):
    """The zoom-8 tile holding every city component."""
    tiles = {mercator_tile(lon, lat, 8) for lon, lat in components.values()}
    assert len(tiles) == 1
    return tiles.pop()


def test_cells_count_every_component(engine, components):
    with engine.connect() as conn:
        kept, counted = cell_counts(conn), layer_counts(conn)
        sums = conn.execute(text("SELECT sum(points), sum(sum_x), sum(sum_y) FROM twin.tile_cell")).one()
    assert kept == counted and sum(kept.values()) == len(components) == 3000
    xs, ys = zip(*(TO_MERCATOR.transform(lon, lat) for lon, lat in components.values()))
    assert (sums[1], sums[2]) == (pytest.approx(sum(xs)), pytest.approx(sum(ys)))


def test_cells_follow_writes_within_the_transaction(engine):
    """Insert, update (status and position), delete: the counts agree at every step, before commit; a
    rollback leaves them as they were."""
    with engine.connect() as conn:
        before = cell_counts(conn)
    with engine.connect() as conn, conn.begin() as tx:
        conn.execute(text("INSERT INTO layers.city_components (code, status, geom) SELECT "
                          "format('3202140199%s', lpad(i::text, 6, '0')), '丢失', "
                          "ST_Point(:lon + i * 1e-4, :lat, 4490) FROM generate_series(1, 5) i"),
                     {"lon": SPOT[0], "lat": SPOT[1]})
        assert cell_counts(conn) == layer_counts(conn) != before
        conn.execute(text("UPDATE layers.city_components SET status = '占用', geom = ST_Point(120.51, 31.49, 4490) "
                          "WHERE code IN ('3202140199000001', '3202140199000002')"))
        conn.execute(text("UPDATE layers.city_components SET status = status WHERE code = '3202140199000003'"))
        conn.execute(text("DELETE FROM layers.city_components "
                          "WHERE fid = (SELECT min(fid) FROM layers.city_components)"))
        assert cell_counts(conn) == layer_counts(conn)
        assert cell_counts(conn)[fine_cell(120.51, 31.49) + ("占用",)] >= 2
        tx.rollback()
    with engine.connect() as conn:
        assert cell_counts(conn) == before
        assert conn.execute(text("SELECT count(*) FROM twin.tile_cell WHERE points <= 0")).scalar() == 0


@pytest.mark.parametrize("z", [6, 8, 10, 13, 14, 15, 16])
def test_cell_clusters_equal_point_clusters(dense, components, statuses, z):
    """Per tile, the clusters summed from cells (current; up to z15) equal those computed from the points
    (as_of now, which reads layer_at(spec, as_of); and current tiles at z16): counts and statuses, positions
    within a tile unit; and an independent count per 16x16 cell, the status of most points (ties: the
    first), the mean position. A point on a tile's west or north edge is in that tile, as in its cell."""
    now = datetime.now(timezone.utc).isoformat()
    placed = {fid: TO_MERCATOR.transform(lon, lat) for fid, (lon, lat) in components.items()}
    compared = 0
    for tile in {mercator_tile(lon, lat, z) for lon, lat in components.values()}:
        left, bottom, right, top = MERCATOR.xy_bounds(tile)
        size, cells = (right - left) / 16, {}
        for fid, (x, y) in placed.items():
            if left <= x < right and bottom < y <= top:
                cells.setdefault((int((x - left) // size), int((top - y) // size)), []).append(fid)
        if sum(map(len, cells.values())) <= DENSE and z > 7:
            continue  # drawn as points, not clusters (tests/test_tiles.py)
        summed = dense.get(tile_url("city_components", tile), params={"properties": "status"})
        computed = dense.get(tile_url("city_components", tile), params={"properties": "status", "as_of": now})
        assert summed.status_code == computed.status_code == 200
        got, expected = placed_clusters(summed.content), placed_clusters(computed.content)
        assert len(got) == len(expected) == len(cells)
        for fids in cells.values():
            ranked = sorted(Counter(statuses[f] for f in fids).items(), key=lambda kv: (-kv[1], kv[0]))
            mean_x, mean_y = (sum(placed[f][i] for f in fids) / len(fids) for i in (0, 1))
            x, y = (mean_x - left) / (right - left) * EXTENT, (top - mean_y) / (top - bottom) * EXTENT
            assert near(got, x, y) == near(expected, x, y) == (len(fids), ranked[0][0])
        compared += 1
    assert compared >= {13: 15, 14: 50, 15: 120, 16: 5}.get(z, 1)  # dense tiles of the test data: 20, 61, 156, 11


@pytest.mark.parametrize(("z", "counted"), [(6, True), (13, True), (14, True), (15, True), (16, False)])
def test_tiles_up_to_z15_are_summed_from_cells(z, counted):
    tile = mercator_tile(*SPOT, z)
    request = LayerRequest(get_layer("city_components"), ("status",))
    assert from_cells(request, address("WebMercatorQuad", z, tile.x, tile.y), TileSettings()) is counted
    assert not from_cells(request, address("WorldCRS84Quad", z, 0, 0), TileSettings())


def test_z8_cluster_status_is_the_most_common(engine, http, district):
    got = clusters(http.get(tile_url("city_components", district), params={"properties": "status"}).content)
    left, bottom, right, top = MERCATOR.xy_bounds(district)
    size = (right - left) / 16
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT ST_X(geom), ST_Y(geom), status FROM layers.city_components")).all()
    per_cell: dict[tuple[int, int], Counter] = {}
    for lon, lat, status in rows:
        x, y = TO_MERCATOR.transform(lon, lat)
        per_cell.setdefault((int((x - left) // size), int((top - y) // size)), Counter())[status] += 1
    for cell, (n, status) in got.items():
        ranked = sorted(per_cell[cell].items(), key=lambda kv: (-kv[1], kv[0]))
        assert (n, status) == (sum(per_cell[cell].values()), ranked[0][0])


def test_cluster_tile_follows_a_committed_write(engine, http, district):
    """The cached z8 tile is evicted through the change log and redrawn from the updated counts."""
    url = tile_url("city_components", district)

    def total() -> int:
        return sum(n for n, _ in clusters(http.get(url, params={"properties": "status"}).content).values())
    start = total()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO layers.city_components (code, status, geom) VALUES "
                          "('3202140198000001', '丢失', ST_Point(:lon, :lat, 4490))"),
                     {"lon": SPOT[0], "lat": SPOT[1]})
    try:
        assert wait_for(lambda: total() == start + 1)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM layers.city_components WHERE code = '3202140198000001'"))
    assert wait_for(lambda: total() == start)


def test_filtered_and_other_grid_tiles_cluster_the_points(http, engine, components, district):
    with engine.connect() as conn:
        broken = conn.execute(text("SELECT count(*) FROM layers.city_components WHERE status = '破损'")).scalar()
    low = mercator_tile(*next(iter(components.values())), 6)
    filtered = clusters(http.get(tile_url("city_components", low),
                                 params={"properties": "status", "filter": "status = '破损'"}).content)
    assert sum(n for n, _ in filtered.values()) == broken > 0
    assert {status for _, status in filtered.values()} == {"破损"}
    total = 0
    for tile in {morecantile.tms.get("WorldCRS84Quad").tile(lon, lat, 6) for lon, lat in components.values()}:
        geographic = http.get(tile_url("city_components", tile, "WorldCRS84Quad"), params={"properties": "code"})
        total += sum(f["properties"]["point_count"] for f in decode(geographic.content)["city_components"])
    assert total == len(components)


def test_composite_tile_carries_the_clusters(http, district):
    alone = clusters(http.get(tile_url("city_components", district)).content)
    onemap = decode(http.get(f"/tiles/onemap/WebMercatorQuad/8/{district.y}/{district.x}").content)
    assert {"city_components", "districts"} <= set(onemap)
    assert sum(f["properties"]["point_count"] for f in onemap["city_components"]) == sum(
        n for n, _ in alone.values())


@pytest.mark.parametrize(("path", "params", "status", "code"), [
    ("/collections/city_components/tiles/WebMercatorQuad/5/13/26", {}, 404, "zoom_out_of_range"),
    ("/collections/city_components/tiles/WebMercatorQuad/8/104/213", {"properties": "nope"}, 400, None),
    ("/collections/city_components/tiles/WebMercatorQuad/8/104/213", {"as_of": "yesterday-ish"}, 400, None),
    # nothing then: an empty tile
    ("/collections/city_components/tiles/WebMercatorQuad/8/104/213", {"as_of": "1900-01-01T00:00:00Z"}, 204, None),
    ("/collections/city_components/tiles/WebMercatorQuad/8/104/213", {"filter": "status = '; DROP TABLE x"}, 400, None),
    ("/collections/city_components/tiles/WebMercatorQuad/8/104/213", {"properties": "status," * 5000}, 400, None),
    ("/collections/city_components/tiles/WebMercatorQuad/8/999/213", {}, 400, "tile_out_of_range"),
    ("/collections/city_components/tiles/WebMercatorQuad/8/104/213", {"properties": ""}, 200, None),
    # z15, summed from cells: nothing in the Gulf of Guinea, a tile past the edge, a bad as_of
    ("/collections/city_components/tiles/WebMercatorQuad/15/16374/16393", {}, 204, None),
    ("/collections/city_components/tiles/WebMercatorQuad/15/13357/32768", {}, 400, "tile_out_of_range"),
    ("/collections/city_components/tiles/WebMercatorQuad/15/13357/27344", {"as_of": "9" * 5000}, 400, None),
])
def test_cluster_tile_bad_input(http, path, params, status, code):
    response = http.get(path, params=params)
    assert response.status_code == status, response.text
    if status >= 400:
        assert response.json()["description"] and (code is None or response.json()["code"] == code)


def test_migrations_downgrade_and_upgrade(database_url):
    """0010 down to 0009 (cells re-levelled to 2^17), 0008 down and up again, 0010 again, on a scratch database:
    the triggers go and come back, the counts rebuilt at each level, exactly."""
    from twin.db import downgrade, migrate

    base, name = database_url.rsplit("/", 1)[0], "twin_tile_cells_migration"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    # (lon, lat, status); the first two in one level-17 cell but two level-19 cells
    placed = [(120.4001, 31.5001, "完好"), (120.4011, 31.5001, "完好"), (120.4001, 31.5001, "破损"),
              (120.5, 31.45, "完好")]

    written = []

    def insert(rows) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for lon, lat, status in rows:
                conn.execute("INSERT INTO layers.city_components (code, status, geom) VALUES "
                             "(%s, %s, ST_Point(%s, %s, 4490))", (f"32021401970{len(written):05}", status, lon, lat))
                written.append((lon, lat, status))

    def kept() -> Counter:
        with psycopg.connect(url, autocommit=True) as conn:
            return Counter({(cx, cy, category): n for cx, cy, category, n in
                            conn.execute("SELECT cx, cy, category, points FROM twin.tile_cell")})

    def counted(level: int) -> Counter:
        return Counter(fine_cell(lon, lat, level) + (status,) for lon, lat, status in written)

    try:
        migrate("0010", url=url)
        insert(placed[:3])
        assert kept() == counted(19) and len(kept()) == 3
        downgrade("0009", url=url)
        assert kept() == counted(17) and len(kept()) == 2
        insert(placed[3:])  # counted by 0008's trigger function again
        assert kept() == counted(17) and sum(kept().values()) == 4
        downgrade("0007", url=url)
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('twin.tile_cell')").fetchone()[0] is None
        insert(placed[1:2])
        migrate("0008", url=url)
        assert kept() == counted(17)
        migrate("0010", url=url)
        assert kept() == counted(19) and sum(kept().values()) == 5
        insert(placed[:2])
        assert kept() == counted(19) and kept()[fine_cell(*placed[1][:2]) + ("完好",)] == 3
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
