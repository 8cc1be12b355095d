"""Readings across stations by time (migration 0009): the viewer's newest readings come from an index,
not a scan of every reading, and stay the newest ones."""

from sqlalchemy import text

NEWEST = ("SELECT station_code, water_class, observed_at FROM layers.water_quality WHERE water_class IS NOT NULL "
          "ORDER BY observed_at DESC, fid LIMIT :n")


def test_newest_classified_readings_come_from_the_time_index(http, engine, loaded):
    with engine.connect() as conn:
        expected = conn.execute(text(NEWEST), {"n": 50}).all()
        plan = "\n".join(row[0] for row in conn.execute(text("EXPLAIN " + NEWEST), {"n": 500}))
    assert "water_quality_observed_at_idx" in plan and "Seq Scan" not in plan, plan

    response = http.get("/collections/water_quality/items", params={
        "filter": "water_class IS NOT NULL", "filter-lang": "cql2-text", "sortby": "-observed_at",
        "properties": "station_code,water_class,observed_at", "limit": 50})
    assert response.status_code == 200, response.text
    got = [(f["properties"]["station_code"], f["properties"]["water_class"]) for f in response.json()["features"]]
    assert got == [(row.station_code, row.water_class) for row in expected]
    assert len(got) == 50


def test_a_day_of_every_station_by_time(http, engine, loaded):
    with engine.connect() as conn:
        # the bundle's busiest day (other tests add readings of their own, around now among others)
        day = conn.scalar(text("SELECT date_trunc('day', observed_at) FROM layers.water_quality GROUP BY 1 "
                               "ORDER BY count(*) DESC, 1 DESC LIMIT 1"))
        count = conn.scalar(text("SELECT count(*) FROM layers.water_quality WHERE observed_at >= :a "
                                 "AND observed_at < :a + interval '1 day'"), {"a": day})
    response = http.get("/collections/water_quality/items", params={
        "datetime": f"{day.isoformat()}/{(day.replace(hour=23, minute=59, second=59)).isoformat()}", "limit": 10000})
    assert response.status_code == 200, response.text
    assert response.json()["numberMatched"] == count > 24
