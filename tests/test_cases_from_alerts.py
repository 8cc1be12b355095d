"""An alert opens a case when its rule asks (open_case): a reading over the limit, sent over HTTP, raises an alert
and the alert one case (source 告警, at the station, routed by the responsibility table, linked back to the
alert); a restart, with two server processes, opens no second case."""

import asyncio
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from events.case_requests import opened_after
from events.feed import last_id
from tests.case_support import key
from tests.events_support import bearer, events_server
from tests.tile_support import wait_for
from twin.auth import create_key

ECOLOGY = "生态环境局"
CLASS = "E0105"  # 水域不洁


@pytest.fixture(scope="module")
def site(engine, server):
    with engine.begin() as conn:
        ecology = create_key(conn, ECOLOGY, ["water_quality", "monitoring_stations"])
        station, nh3n = conn.execute(text(
            "SELECT t.station_code, d.id FROM sensing.datastream d JOIN sensing.thing t ON t.id = d.thing_id "
            "JOIN layers.monitoring_stations s ON s.code = t.station_code "
            "WHERE d.wq_field = 'nh3n' AND EXISTS (SELECT FROM layers.streets st WHERE ST_Intersects(st.geom, s.geom)) "
            "ORDER BY t.station_code LIMIT 1")).one()  # a station of the district: cases are taken there only
    return {"ecology": ecology, "station": station, "nh3n": nh3n,
            "dispatcher": key(engine, "新吴区城市管理局", "dispatcher")}


def cases_of(engine, rule: str) -> list:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT a.fid AS alert_fid, a.code AS alert_code, c.case_no, c.source, c.class_code, c.description, "
            "c.department, c.grid_code, c.street_code, ST_Equals(a.geom, c.geom) AS same_point "
            "FROM layers.alerts a JOIN cases.alert_case l ON l.alert_fid = a.fid "
            "JOIN layers.cases c ON c.fid = l.case_fid WHERE a.rule = :rule ORDER BY a.fid"), {"rule": rule}).all()


def test_the_option_is_checked_like_the_others(server, site):
    with httpx.Client(base_url=server, timeout=30) as http:
        for rule, where in [({"open_case": True}, "body"), ({"case_class": CLASS}, "body"),
                            ({"open_case": True, "case_class": "水域不洁"}, "body.case_class")]:
            answer = http.put("/alerts/rules/test-bad-case", headers=bearer(site["ecology"]),
                              json={"kind": "threshold", "parameter": "nh3n", "limit": 2.0} | rule)
            assert answer.status_code == 400, answer.text
            assert answer.json()["code"] == "invalid_rule" and answer.json()["where"] == where


def test_an_exceedance_opens_one_case_that_a_restart_does_not_repeat(database_url, data_dir, engine, site):
    rule = {"kind": "threshold", "parameter": "nh3n", "limit": 2.0, "things": [site["station"]],
            "open_case": True, "case_class": CLASS}
    with events_server(database_url, data_dir, "cases-from-alerts") as base, \
            httpx.Client(base_url=base, timeout=30) as http:
        made = http.put("/alerts/rules/test-case-nh3n", json=rule, headers=bearer(site["ecology"]))
        assert made.status_code == 201, made.text
        assert (made.json()["open_case"], made.json()["case_class"]) == (True, CLASS)
        at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=30)
        reading = http.post(f"/sta/v1.1/Datastreams({site['nh3n']})/Observations",
                            json={"phenomenonTime": at.isoformat(), "result": 4.5}, headers=bearer(site["ecology"]))
        assert reading.status_code == 201, reading.text
        assert wait_for(lambda: cases_of(engine, "test-case-nh3n"), 20), "the alert opened no case"
        [case] = cases_of(engine, "test-case-nh3n")
        assert (case.source, case.class_code, case.same_point) == ("告警", CLASS, True)
        for named in ("test-case-nh3n", site["station"], "4.5", case.alert_code):
            assert named in case.description
        with engine.connect() as conn:  # routed as any report of its class and place is
            expected = conn.execute(text(
                "SELECT department FROM cases.responsibility WHERE starts_with(:c, class_prefix) "
                "AND area IN (:g, :s, '*') ORDER BY length(class_prefix) DESC, "
                "CASE area WHEN :g THEN 0 WHEN :s THEN 1 ELSE 2 END LIMIT 1"),
                {"c": CLASS, "g": case.grid_code, "s": case.street_code}).scalar()
        assert case.department == expected
        listed = http.get("/cases", headers=site["dispatcher"]).json()["cases"]
        assert case.case_no in [c["case_no"] for c in listed]
        one = http.get(f"/cases/{case.case_no}", headers=site["dispatcher"]).json()
        assert one["alert"] == {"fid": case.alert_fid, "code": case.alert_code,
                                "href": f"/collections/alerts/items/{case.alert_fid}"}
        assert http.get(one["alert"]["href"]).json()["properties"]["rule"] == "test-case-nh3n"
        # the same alert worsening is no new alert, and no new case
        worse = http.post(f"/sta/v1.1/Datastreams({site['nh3n']})/Observations",
                          json={"phenomenonTime": (at + timedelta(minutes=10)).isoformat(), "result": 6.0},
                          headers=bearer(site["ecology"]))
        assert worse.status_code == 201, worse.text
    with events_server(database_url, data_dir, "cases-from-alerts-again", workers=2) as base, \
            httpx.Client(base_url=base, timeout=30) as http:
        # a second rule asking for cases, judged over the stored readings: the restarted servers follow the alerts
        made = http.put("/alerts/rules/test-case-nh3n-again", json=rule | {"limit": 3.0},
                        headers=bearer(site["ecology"]))
        assert made.status_code == 201, made.text
        assert wait_for(lambda: cases_of(engine, "test-case-nh3n-again"), 20), "no case after the restart"
    assert [c.case_no for c in cases_of(engine, "test-case-nh3n")] == [case.case_no]
    assert len(cases_of(engine, "test-case-nh3n-again")) == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM cases.alert_case WHERE problem IS NOT NULL")).scalar() == 0


def test_the_follower_reads_to_the_end_of_the_log_readings_included(database_url, engine, server):
    # A reading's event id comes from the change log's sequence, so it passes every change id: a follower that read
    # only to the last change id never reached the hub's position and looped without waiting.
    at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
    with engine.begin() as conn:  # a reading that is no water-quality row (the server made the radiation ones)
        stream = conn.execute(text("SELECT min(id) FROM sensing.datastream WHERE wq_field IS NULL")).scalar()
        conn.execute(text("SELECT sensing.ensure_partitions(:t, :t)"), {"t": at})
        conn.execute(text("INSERT INTO sensing.observation (datastream_id, phenomenon_time, result) "
                          "VALUES (:s, :t, 0.4)"), {"s": stream, "t": at})

    async def read() -> tuple[int, int]:
        async_engine = create_async_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            async with async_engine.connect() as conn:
                _, position = await opened_after(conn, 0, 10_000)
                return position, await last_id(conn)
        finally:
            await async_engine.dispose()

    position, end = asyncio.run(read())
    with engine.connect() as conn:
        changes = conn.execute(text("SELECT max(change_id) FROM twin.change")).scalar()
    assert end > changes  # the reading's event is the log's last
    assert position == end
