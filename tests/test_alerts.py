"""Alert rules judged as readings arrive: hysteresis, consecutive readings, maintenance readings, clear period,
permit limits of a source, acknowledgement, the upstream context, and a restart with alerts open."""

import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import text

from events import rules
from tests.events_support import bearer, events_server
from tests.tile_support import wait_for
from tests.test_hj212_ingest import observed_property
from twin.auth import create_key

ECOLOGY = "生态环境局"
START = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=12)
MN = "88888880000020"


@pytest.fixture(scope="module")
def keys(engine, loaded):
    with engine.begin() as conn:
        return {"ecology": create_key(conn, ECOLOGY, ["water_quality", "monitoring_stations"]),
                "urban": create_key(conn, "城管局", ["city_components"])}


@pytest.fixture(scope="module")
def site(database_url, data_dir, loaded, engine, keys):
    """A server; a station with pollution sources and outfalls or pump stations upstream of it on the drainage
    network (the trace's answer, `traced`), its nh3n Datastream, and a discharger's Thing
    (the first of those sources) reporting COD with a permit limit of 100 mg/L."""
    with events_server(database_url, data_dir, "alerts-server") as base, \
            httpx.Client(base_url=base, timeout=30) as http:
        station = source = traced = None
        for feature in http.get("/collections/monitoring_stations/items", params={"limit": 200}).json()["features"]:
            traced = upstream_of(http, feature["properties"]["code"])
            if traced is not None and reached(traced, "pollution_sources") \
                    and (reached(traced, "outfalls") or reached(traced, "pump_stations")):
                station, source = feature, reached(traced, "pollution_sources")[0]
                break
        assert station is not None, "no station with sources and outfalls or pumps upstream in the test district"
        with engine.connect() as conn:
            nh3n = conn.execute(text("SELECT d.id FROM sensing.datastream d JOIN sensing.thing t ON t.id = d.thing_id "
                                     "WHERE t.station_code = :code AND d.wq_field = 'nh3n'"),
                                {"code": station["properties"]["code"]}).scalar_one()
        thing = {"name": "某化工有限公司", "description": "重点排污单位",
                 "properties": {"hj212_mn": MN, "credit_code": source["properties"]["credit_code"],
                                "permit_limits": {"w01018": 100}}}
        made = http.post("/sta/v1.1/Things", json=thing, headers=bearer(keys["ecology"]))
        assert made.status_code == 201, made.text
        thing_id = int(made.headers["Location"].rsplit("(", 1)[1].rstrip(")"))
        stream = {"name": "化学需氧量 总排口", "description": "COD",
                  "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                  "unitOfMeasurement": {"name": "mg/L", "symbol": "mg/L", "definition": "http://unitsofmeasure.org"},
                  "properties": {"hj212_code": "w01018"}, "Thing": {"@iot.id": thing_id},
                  "Sensor": {"name": f"在线分析仪 {MN}", "description": "COD", "encodingType": "text/html",
                             "metadata": ""},
                  "ObservedProperty": observed_property(http, "w01018", "化学需氧量")}
        made = http.post("/sta/v1.1/Datastreams", json=stream, headers=bearer(keys["ecology"]))
        assert made.status_code == 201, made.text
        cod = int(made.headers["Location"].rsplit("(", 1)[1].rstrip(")"))
        yield {"base": base, "http": http, "station": station, "source": source, "nh3n": nh3n, "cod": cod,
               "traced": traced}


def upstream_of(http, station_code: str) -> dict | None:
    """The drainage trace's own answer: what drains to the station within the alert context's 10 km."""
    traced = http.post("/query/trace", json={"feature": {"layer": "monitoring_stations",
                                                         "where": {"code": station_code}},
                                             "direction": "upstream", "distance": 10000, "geometries": False})
    return traced.json() if traced.status_code == 200 else None


def reached(traced: dict, layer: str) -> list[dict]:
    return traced.get(layer, {}).get("features", [])


def post_reading(http, key, stream: int, at: datetime, value: float, quality: str | None = None):
    body = {"phenomenonTime": at.isoformat(), "result": value}
    if quality:
        body["resultQuality"] = quality
    answer = http.post(f"/sta/v1.1/Datastreams({stream})/Observations", json=body, headers=bearer(key))
    assert answer.status_code == 201, answer.text


def alerts_of(engine, rule: str) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM layers.alerts WHERE rule = :rule ORDER BY fid"), {"rule": rule}).all()


def put_rule(http, key, name: str, **rule):
    return http.put(f"/alerts/rules/{name}", json=rule, headers=bearer(key))


def test_a_threshold_rule_raises_one_alert_through_hysteresis_and_closes_after_its_clear_period(site, keys, engine):
    http, key = site["http"], keys["ecology"]
    made = put_rule(http, key, "test-nh3n", kind="threshold", parameter="nh3n", limit=2.0, hysteresis=0.5,
                    readings=2, clear_s=3600, things=[site["station"]["properties"]["code"]])
    assert made.status_code == 201, made.text
    assert made.json()["department"] == ECOLOGY
    hour = timedelta(hours=1)
    for step, (value, quality) in enumerate([(1.0, None), (2.5, None), (9.0, "维护"), (2.6, None), (1.9, None),
                                             (2.7, None), (1.8, None)]):
        post_reading(http, key, site["nh3n"], START + step * hour, value, quality)
    [alert] = alerts_of(engine, "test-nh3n")
    # 2.5 and 2.6 in a row (the maintenance reading 9.0 neither counts nor breaks the run), 1.9 and 1.8 inside
    # the hysteresis band: one alert, still open
    assert (alert.state, alert.first_value, alert.worst_value, alert.last_value, alert.readings) == \
        ("open", 2.5, 2.7, 2.7, 3)
    assert alert.first_at == START + hour and alert.last_at == START + 5 * hour
    assert alert.limit_value == 2.0 and alert.station_code == site["station"]["properties"]["code"]
    post_reading(http, key, site["nh3n"], START + 7 * hour, 1.2)  # clear, but not yet for the clear period
    post_reading(http, key, site["nh3n"], START + 7 * hour + timedelta(minutes=30), 1.1)
    assert alerts_of(engine, "test-nh3n")[0].state == "open"
    post_reading(http, key, site["nh3n"], START + 8 * hour, 1.0)  # an hour back within: closed
    [alert] = alerts_of(engine, "test-nh3n")
    assert alert.state == "closed" and alert.closed_at == START + 8 * hour
    # the alert is a feature of the alerts layer, with its history
    item = http.get(f"/collections/alerts/items/{alert.fid}").json()
    assert item["properties"]["rule"] == "test-nh3n" and item["geometry"]["type"] == "Point"
    history = http.get(f"/collections/alerts/items/{alert.fid}/history").json()
    assert len(history["versions"]) >= 2


def test_a_permit_rule_reads_the_limit_of_the_source_and_a_water_alert_names_it_as_a_suspect(site, keys, engine):
    http, key = site["http"], keys["ecology"]
    for step, value in enumerate([80, 120, 130]):
        post_reading(http, key, site["cod"], START + timedelta(hours=step), value)
    [alert] = alerts_of(engine, "source-cod-over-permit")
    assert (alert.state, alert.limit_value, alert.first_value, alert.readings) == ("open", 100, 120, 2)
    # a station alert opened afterwards: its context ranks the discharger first, for its abnormal readings
    made = put_rule(http, key, "test-nh3n-context", kind="threshold", parameter="nh3n", limit=3.0,
                    things=[site["station"]["properties"]["code"]])
    assert made.status_code == 201, made.text
    post_reading(http, key, site["nh3n"], START + timedelta(hours=9), 3.5)
    [opened] = alerts_of(engine, "test-nh3n-context")

    def context():
        return alerts_of(engine, "test-nh3n-context")[0].context

    assert wait_for(context, 20), "no upstream context"
    body = json.loads(context())
    assert body["reaches"] and body["ranking"]
    top = body["suspects"][0]
    assert (top["layer"], top["code"]) == ("pollution_sources", site["source"]["properties"]["credit_code"])
    assert top["rank"] == 1 and top["abnormal_readings"] == 2 and top["online"]
    assert "over the permit limit" in top["why"] and "upstream along the drainage network" in top["why"]
    assert top["alerts"] == 1  # the discharger's own permit alert, in the window
    assert [s["rank"] for s in body["suspects"]] == list(range(1, len(body["suspects"]) + 1))
    assert opened.state == "open"
    # the suspects are what the drainage trace reaches, at its distances; the rest ranked by distance
    traced = site["traced"]
    expected = {(layer, f["id"]): pytest.approx(f["properties"]["distance_m"], abs=0.1)
                for layer in ("pollution_sources", "outfalls", "pump_stations") for f in reached(traced, layer)}
    assert {(s["layer"], s["fid"]): s["along_m"] for s in body["suspects"]} == expected
    assert {"outfalls", "pump_stations"} & {s["layer"] for s in body["suspects"]}
    quiet = [s for s in body["suspects"] if not (s["abnormal_readings"] or s["alerts"] or s["online"])]
    assert quiet and [s["along_m"] for s in quiet] == sorted(s["along_m"] for s in quiet)
    assert {r["fid"] for r in body["reaches"]} == {f["id"] for f in reached(traced, "rivers")}


def test_an_alert_at_a_station_off_the_network_gets_a_context_that_says_so(site, engine):
    """A station no longer in its layer (or never joined to the network): no suspects, and the reason."""
    with engine.begin() as conn:
        fid = conn.execute(text("INSERT INTO layers.alerts (code, rule, state, station_code, first_at, last_at) "
                                "VALUES ('TEST-OFF-NETWORK', 'test-off-network', 'open', 'XW-GONE', now(), now()) "
                                "RETURNING fid")).scalar_one()
    try:
        assert wait_for(lambda: alerts_of(engine, "test-off-network")[0].context, 20), "no context"
        body = json.loads(alerts_of(engine, "test-off-network")[0].context)
        assert body == {"reaches": [], "suspects": [], "note": "the station is not on the drainage network"}
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM layers.alerts WHERE fid = :fid"), {"fid": fid})


def test_acknowledging_takes_the_rule_departments_key_and_a_note(site, keys, engine):
    http = site["http"]
    [alert] = alerts_of(engine, "source-cod-over-permit")
    path = f"/alerts/{alert.fid}/acknowledge"
    assert http.post(path, json={"note": "现场核查"}).status_code == 401
    refused = http.post(path, json={"note": "现场核查"}, headers=bearer(keys["urban"]))
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden_department"
    assert http.post(path, json={}, headers=bearer(keys["ecology"])).status_code == 400
    done = http.post(path, json={"note": "现场核查"}, headers=bearer(keys["ecology"]))
    assert done.status_code == 200, done.text
    assert done.json()["properties"]["state"] == "acknowledged"
    assert done.json()["properties"]["note"] == "现场核查"
    assert http.post(path, json={"note": "again"}, headers=bearer(keys["ecology"])).status_code == 409
    listed = http.get("/alerts").json()["features"]
    assert alert.fid in [f["id"] for f in listed]


def test_a_rate_rule_judges_the_change_per_hour(site, keys, engine):
    http, key = site["http"], keys["ecology"]
    with engine.connect() as conn:
        code, stream = conn.execute(text(
            "SELECT t.station_code, d.id FROM sensing.datastream d JOIN sensing.thing t ON t.id = d.thing_id "
            "WHERE d.wq_field = 'tp' AND t.station_code <> :code ORDER BY t.id LIMIT 1"),
            {"code": site["station"]["properties"]["code"]}).one()
    made = put_rule(http, key, "test-tp-rate", kind="rate", parameter="tp", limit=0.5, things=[code])
    assert made.status_code == 201, made.text
    for step, value in enumerate([0.1, 0.3, 1.0]):  # +0.2/h, then +0.7/h
        post_reading(http, key, stream, START + timedelta(hours=step), value)
    [alert] = alerts_of(engine, "test-tp-rate")
    assert alert.state == "open" and alert.first_at == START + timedelta(hours=2)
    assert alert.first_value == pytest.approx(0.7) and alert.rule_kind == "rate"


@pytest.mark.parametrize("rule, where", [
    ({"kind": "threshold", "parameter": "nh3n"}, "body"),
    ({"kind": "threshold", "parameter": "nh3n", "limit": 1, "readings": 0}, "body.readings"),
    ({"kind": "permit", "parameter": "w01018", "limit": 3}, "body"),
    ({"kind": "sometimes", "parameter": "nh3n", "limit": 1}, "body.kind"),
])
def test_a_bad_rule_is_refused_saying_where(site, keys, rule, where):
    answer = put_rule(site["http"], keys["ecology"], "test-bad", **rule)
    assert answer.status_code == 400 and answer.json()["where"] == where, answer.text


def test_only_the_owning_department_changes_a_rule(site, keys):
    http = site["http"]
    assert put_rule(http, None, "test-nh3n", kind="water_class").status_code == 401
    refused = put_rule(http, keys["urban"], "test-nh3n", kind="water_class")
    assert refused.status_code == 403
    listed = {r["name"]: r for r in http.get("/alerts/rules").json()["rules"]}
    assert listed["test-nh3n"]["kind"] == "threshold"
    assert listed["station-below-target-class"]["source"].startswith("spec:")


def test_rules_loaded_again_at_start_up_neither_lose_nor_duplicate_open_alerts(site, keys, engine):
    """What a restarting server does: load the spec files' rules (unchanged, so left alone); the alerts and
    the rules' state are in the database, so the next reading carries on the open alert."""
    [before] = [a for a in alerts_of(engine, "test-nh3n-context") if a.state == "open"]
    with engine.begin() as conn:
        assert rules.load_specs(conn, 24) == 0
    post_reading(site["http"], keys["ecology"], site["nh3n"], START + timedelta(hours=10), 3.9)
    [after] = [a for a in alerts_of(engine, "test-nh3n-context") if a.state != "closed"]
    assert after.fid == before.fid and after.readings == before.readings + 1 and after.worst_value == 3.9
    [permit] = alerts_of(engine, "source-cod-over-permit")
    assert permit.state == "acknowledged"


def test_the_viewer_lists_a_new_alert_without_a_reload_and_shows_its_suspects(site, keys, engine, tmp_path):
    sync = pytest.importorskip("playwright.sync_api")
    http, station = site["http"], site["station"]
    made = put_rule(http, keys["ecology"], "test-viewer", kind="threshold", parameter="nh3n", limit=5.0,
                    things=[station["properties"]["code"]])
    assert made.status_code == 201, made.text
    lng, lat = station["geometry"]["coordinates"]
    with sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(f"{site['base']}/map#map=12/{lat}/{lng}")
        page.wait_for_function("document.body.dataset.openAlerts !== undefined", timeout=30_000)
        before = int(page.evaluate("document.body.dataset.openAlerts"))
        post_reading(http, keys["ecology"], site["nh3n"], START + timedelta(hours=11), 6.5)
        page.wait_for_function(f"Number(document.body.dataset.openAlerts) > {before}", timeout=15_000)
        [alert] = [a for a in alerts_of(engine, "test-viewer") if a.state == "open"]
        assert wait_for(lambda: alerts_of(engine, "test-viewer")[0].context, 20)
        row = page.locator(f'[data-alert="{alert.fid}"]')
        row.wait_for(timeout=10_000)
        page.wait_for_timeout(500)  # the context's change event, after the alert's own
        row.click()
        page.wait_for_function("Number(document.body.dataset.suspects) > 0", timeout=15_000)
        browser.close()


def test_a_silent_source_raises_an_alert_by_the_clock_and_its_next_reading_closes_it(site, keys, engine):
    http, key = site["http"], keys["ecology"]
    made = put_rule(http, key, "test-cod-silence", kind="silence", parameter="w01018", things=[MN], expected_s=1,
                    readings=2)
    assert made.status_code == 201, made.text
    # the rule was judged over the stored readings: the source last reported at START + 2 h, silent since

    def opened():
        return [a for a in alerts_of(engine, "test-cod-silence") if a.state == "open"]

    assert wait_for(opened, 15)
    [alert] = opened()
    assert alert.first_at == START + timedelta(hours=2, seconds=2) and alert.rule_kind == "silence"
    back = datetime.now(timezone.utc).replace(microsecond=0)
    post_reading(http, key, site["cod"], back, 50)
    closed = next(a for a in alerts_of(engine, "test-cod-silence") if a.fid == alert.fid)
    assert closed.state == "closed" and closed.closed_at == back
    assert put_rule(http, key, "test-bad-silence", kind="silence", parameter="w01018").status_code == 400
