"""Vector tiles side by side: the raw ST_AsMVT SQL floor, the server cold (cache miss) and warm (hit).

For every zoom-14 (and zoom-12) Web Mercator tile over the city components, the floor is the
plainest tile PostGIS can make (one layer, no clustering, no simplification, no HTTP); cold asks
the server with a cache-busting parameter, so it renders; warm asks the same URL again (served by
the cache's fast path). The server must serve the bundled district (`twin demo`).

    .venv/bin/python -m bench.tiles --url http://127.0.0.1:8000
"""

import statistics
import time
import uuid

import httpx
import morecantile
import psycopg
import typer

from twin.db import database_url

FLOOR = """
SELECT ST_AsMVT(t, 'city_components', 4096, 'geom', 'fid') FROM (
  SELECT fid, code, major_class, minor_class, class_name, status, owner_unit, street_code, installed_on,
         ST_AsMVTGeom(ST_Transform(geom, 3857), ST_TileEnvelope(%(z)s, %(x)s, %(y)s),
                                                 4096, 64, true) AS geom
  FROM layers.city_components
  WHERE geom && ST_Transform(ST_TileEnvelope(%(z)s, %(x)s, %(y)s, margin => 64.0 / 4096), 4490)) t
"""


def _tiles(conn, z: int) -> list[morecantile.Tile]:
    west, south, east, north = conn.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                                            "(SELECT ST_Extent(geom) e FROM layers.city_components) s").fetchone()
    return list(morecantile.tms.get("WebMercatorQuad").tiles(west, south, east, north, [z]))


def _times(run, tiles) -> list[float]:
    times = []
    for tile in tiles:
        start = time.perf_counter()
        run(tile)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _row(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"{name:<34} {statistics.median(times):7.2f} ms {p90:7.2f} ms {len(times) / (sum(times) / 1000):8.0f}/s"


def main(url: str = typer.Option("http://127.0.0.1:8000", help="this server")):
    with psycopg.connect(database_url()) as conn, httpx.Client(base_url=url, timeout=60) as http:
        print(f"{'case':<34} {'median':>10} {'p90':>10} {'rate':>10}")
        for z in (12, 14):
            tiles = _tiles(conn, z)
            bust = uuid.uuid4().hex  # a fresh cache key for this run

            def floor(t):
                conn.execute(FLOOR, {"z": t.z, "x": t.x, "y": t.y}).fetchone()

            def server(t):
                response = http.get(f"/collections/city_components/tiles/WebMercatorQuad/{t.z}/{t.y}/{t.x}",
                                    params={"run": bust})
                assert response.status_code in (200, 204), response.text

            floor(tiles[0])
            print(_row(f"z{z} SQL floor ({len(tiles)} tiles)", _times(floor, tiles)))
            print(_row(f"z{z} server, cold (render)", _times(server, tiles)))
            print(_row(f"z{z} server, warm (cache hit)", _times(server, tiles)))


if __name__ == "__main__":
    typer.run(main)
