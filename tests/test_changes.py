"""Change tracking end to end, on a private database: random writes (HTTP, ETL, SQL) replay exactly from
the change feed and as_of shows each moment as it was; history, layer changes and diffs; writers in commit
order; reverting ETL runs, and refusing to when later edits conflict."""

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pyproj
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from etl.run import run_file
from layers.catalog import catalog, get_layer
from layers.tables import bbox_filter, layer_at
from tests.etl_support import REPO
from tests.history_support import LAYER, SCRATCH, Replica, bearer, credit_code, department_keys, private_server, \
    snapshot, source_feature, write_csv
from tests.lock_support import wait_for_waiting_writer

ITEMS = f"/collections/{LAYER}/items"
serials = itertools.count(1000)
TO_METRES = pyproj.Transformer.from_crs(4490, 4549, always_xy=True)


@pytest.fixture(scope="module")
def site(database_url, data_dir):
    files = Path(tempfile.mkdtemp(prefix="twin-changes-"))
    with private_server(database_url, data_dir, "twin_changes") as (url, engine, base):
        with httpx.Client(base_url=base, timeout=60) as client:
            yield {"url": url, "engine": engine, "api": client, "keys": department_keys(engine), "files": files}
    shutil.rmtree(files, ignore_errors=True)


@pytest.fixture(scope="module")
def replica(site):
    follower = Replica(site["api"], layer=LAYER)
    follower.follow()
    return follower


def last_change(engine) -> tuple[int, object]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT change_id, changed_at FROM twin.change ORDER BY change_id DESC LIMIT 1")
                           ).first()
    return (row.change_id, row.changed_at) if row else (0, None)


def post(site, n: int, lon: float, lat: float, **props) -> int:
    response = site["api"].post(ITEMS, json=source_feature(n, lon, lat, **props),
                                headers=bearer(site["keys"]["ecology"]))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def patch(site, fid: int, body: dict) -> httpx.Response:
    response = site["api"].patch(f"{ITEMS}/{fid}", json=body, headers=bearer(site["keys"]["ecology"]))
    assert response.status_code == 200, response.text
    return response


def etl(site, rows: list[dict], mode: str = "upsert"):
    path = write_csv(site["files"] / f"sources-{next(serials)}.csv", rows)
    result = run_file(site["engine"], "pollution_sources", path, crs="EPSG:4490", mode=mode, actor="test:etl")
    assert result.status == "succeeded", result.error
    return result


def file_row(properties: dict, lon: float, lat: float) -> dict:
    return {k: properties[k] for k in ("credit_code", "name", "permit_class", "key_unit")} | {"lon": lon, "lat": lat}


lons = st.floats(SCRATCH[0], SCRATCH[2])
lats = st.floats(SCRATCH[1], SCRATCH[3])
names = st.text(alphabet="ab 测试公司厂'\"%_\\;-", min_size=1, max_size=12).filter(str.strip)
pick = st.integers(0, 1000)
STEP = st.one_of(
    st.tuples(st.just("post"), names, lons, lats),
    st.tuples(st.just("rename"), pick, names),
    st.tuples(st.just("move"), pick, lons, lats),
    st.tuples(st.just("delete"), pick),
    st.tuples(st.just("sql"), pick, names),
    st.tuples(st.just("etl"), st.lists(st.tuples(pick, st.booleans(), names, lons, lats), min_size=1, max_size=4)),
)


def apply_step(site, step) -> None:
    kind, engine = step[0], site["engine"]
    now = snapshot(engine)
    fids = sorted(now)
    if kind == "post":
        post(site, next(serials), step[2], step[3], name=step[1])
        return
    if not fids and kind != "etl":
        post(site, next(serials), 120.95, 32.1)
        return
    if kind == "rename":
        patch(site, fids[step[1] % len(fids)], {"properties": {"name": step[2]}})
    elif kind == "move":
        patch(site, fids[step[1] % len(fids)], {"geometry": {"type": "Point", "coordinates": [step[2], step[3]]}})
    elif kind == "delete":
        response = site["api"].delete(f"{ITEMS}/{fids[step[1] % len(fids)]}", headers=bearer(site["keys"]["ecology"]))
        assert response.status_code == 204, response.text
    elif kind == "sql":
        before = last_change(engine)[0]
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE layers.{LAYER} SET name = :name WHERE fid = :fid"),
                         {"name": step[2], "fid": fids[step[1] % len(fids)]})
        with engine.connect() as conn:
            actors = conn.execute(text("SELECT actor FROM twin.change WHERE change_id > :id"), {"id": before}).scalars()
            assert set(actors) <= {"sql:twin"}
    else:
        rows = {}
        for choice, new, name, lon, lat in step[1]:
            code = credit_code(next(serials)) if new or not fids else now[fids[choice % len(fids)]][0]["credit_code"]
            rows[code] = {"credit_code": code, "name": name, "permit_class": "简化管理", "key_unit": "是",
                          "lon": lon, "lat": lat}
        etl(site, list(rows.values()))


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=6))
def test_random_writes_replay_from_the_feed_and_as_of_sees_each_moment(site, replica, steps):
    engine = site["engine"]
    moments = [(last_change(engine)[1], snapshot(engine))]
    for step in steps:
        event(step[0])
        before = last_change(engine)[0]
        apply_step(site, step)
        change_id, moment = last_change(engine)
        if change_id > before:
            moments.append((moment, snapshot(engine)))
    replica.follow()
    assert replica.layer_state() == snapshot(engine)
    for (earlier, then), (moment, now) in itertools.pairwise(moments):
        assert snapshot(engine, as_of=moment) == now
        assert snapshot(engine, as_of=moment - timedelta(microseconds=1)) == then


def test_global_feed_replays_every_layer(site):
    api, key = site["api"], bearer(site["keys"]["ecology"])
    station = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [120.93, 32.12]},
               "properties": {"code": "T-01", "name": "试验站", "evaluation_type": "river", "target_class": 3}}
    fid = api.post("/collections/monitoring_stations/items", json=station, headers=key).json()["id"]
    assert api.patch(f"/collections/monitoring_stations/items/{fid}", json={"properties": {"target_class": 2}},
                     headers=key).status_code == 200
    reading = {"type": "Feature", "geometry": None,
               "properties": {"station_code": "T-01", "observed_at": "2024-05-01T08:00:00", "status": "正常",
                              "ph": 7.123456789012345, "do": 8.5}}
    rid = api.post("/collections/water_quality/items", json=reading, headers=key).json()["id"]
    assert api.patch(f"/collections/water_quality/items/{rid}", json={"properties": {"do": None, "tn": 1.25}},
                     headers=key).status_code == 200
    follower = Replica(api, page=7)  # small pages: many cursors and next links
    follower.follow()
    with site["engine"].connect() as conn:
        assert follower.applied == conn.execute(text("SELECT count(*) FROM twin.change")).scalar()
    for layer in (s.id for s in catalog().values() if s.kind != "raster"):
        assert follower.layer_state(layer) == snapshot(site["engine"], layer), layer
    assert follower.layer_state("water_quality")[rid][0]["observed_at"] == "2024-05-01T00:00:00+00:00"
    tail = api.get("/changes", params={"after": follower.cursor}).json()
    assert tail["changes"] == [] and tail["cursor"] == follower.cursor
    assert [link["rel"] for link in tail["links"]] == ["self"]


def test_feed_parameters_are_checked(site):
    api = site["api"]
    for params in ({"after": -1}, {"limit": 0}, {"limit": 10_001}, {"after": "x"}, {"after": 2**64}):
        response = api.get("/changes", params=params)
        assert response.status_code == 400 and response.json()["code"] == "invalid_parameter", params
    assert api.get("/changes", params={"layer": "nope"}).status_code == 404


def test_writers_commit_in_change_id_order(site):
    """A transaction that started writing first commits its changes first: a later writer waits for the
    change-log lock, so a client at the head of the feed can never skip a change that commits late."""
    engine, api = site["engine"], site["api"]
    first, second = post(site, next(serials), 120.91, 32.06), post(site, next(serials), 120.92, 32.06)
    start = last_change(engine)[0]
    done = []
    with engine.connect() as conn:
        transaction = conn.begin()
        conn.execute(text(f"UPDATE layers.{LAYER} SET address = 'slow' WHERE fid = :fid"), {"fid": first})
        editor = threading.Thread(target=lambda: done.append(
            httpx.patch(f"{api.base_url}{ITEMS}/{second}", json={"properties": {"address": "fast"}},
                        headers=bearer(site["keys"]["ecology"]), timeout=30).status_code))
        editor.start()
        waiting = wait_for_waiting_writer(site["url"])  # the editor's UPDATE, queued behind the open transaction
        assert any(f"UPDATE layers.{LAYER}" in query for query in waiting), waiting
        assert editor.is_alive() and done == []
        assert api.get("/changes", params={"after": start}).json()["changes"] == []
        transaction.commit()
    editor.join()
    assert done == [200]
    feed = api.get("/changes", params={"after": start}).json()["changes"]
    assert [(c["fid"], c["actor"]) for c in feed] == [(first, "sql:twin"), (second, feed[1]["actor"])]
    assert datetime.fromisoformat(feed[0]["time"]) < datetime.fromisoformat(feed[1]["time"])
    assert feed[1]["actor"].startswith("生态环境局/")


def test_truncate_is_refused(site):
    with pytest.raises(Exception, match="would bypass the change history"):
        with site["engine"].begin() as conn:
            conn.execute(text(f"TRUNCATE layers.{LAYER}"))


def test_a_feature_made_and_deleted_in_one_transaction_is_recorded(site):
    """Both changes carry the transaction's moment; the version between them lived for no time at all."""
    start, _ = last_change(site["engine"])
    with site["engine"].begin() as conn:
        fid = conn.execute(text(f"INSERT INTO layers.{LAYER} (credit_code, name, permit_class, geom) VALUES "
                                "(:code, '一闪', '登记管理', ST_SetSRID(ST_MakePoint(120.95, 32.1), 4490)) "
                                "RETURNING fid"), {"code": credit_code(next(serials))}).scalar()
        conn.execute(text(f"DELETE FROM layers.{LAYER} WHERE fid = :fid"), {"fid": fid})
    feed = site["api"].get("/changes", params={"after": start}).json()["changes"]
    assert [(c["fid"], c["operation"], c["version"]) for c in feed] == [(fid, "insert", 1), (fid, "delete", 2)]
    assert feed[0]["time"] == feed[1]["time"]
    history = site["api"].get(f"{ITEMS}/{fid}/history").json()
    assert history["deleted"] is True and [v["operation"] for v in history["versions"]] == ["delete", "insert"]
    assert site["api"].get(f"{ITEMS}/{fid}", params={"as_of": feed[0]["time"]}).status_code == 404


EDGE = 120.95  # the east edge of the box below
BOX = (120.93, 32.08, EDGE, 32.10)


def _box_over_http(site, fids, moment) -> dict[int, tuple[str, list[float]]]:
    """{fid: (name, coordinates)} of `fids` in BOX as of `moment`, from the items endpoint."""
    response = site["api"].get(ITEMS, params={"bbox": ",".join(map(str, BOX)), "as_of": moment.isoformat(),
                                              "limit": 10000})
    assert response.status_code == 200, response.text
    return {f["id"]: (f["properties"]["name"], f["geometry"]["coordinates"])
            for f in response.json()["features"] if f["id"] in fids}


def _box_in_sql(engine, fids, moment, *planner_off: str) -> dict[int, tuple[str, list[float]]]:
    """The same through layers.tables.layer_at, with the named plan types switched off."""
    src = layer_at(get_layer(LAYER), moment)
    with engine.begin() as conn:
        for setting in planner_off:
            conn.execute(text(f"SET LOCAL {setting} = off"))
        rows = conn.execute(select(src.c.fid, src.c.name, src.c.geom.ST_X(), src.c.geom.ST_Y())
                            .where(bbox_filter(src.c.geom, BOX))).all()
    return {fid: (name, [x, y]) for fid, name, x, y in rows if fid in fids}


def test_as_of_in_a_box_is_exact_at_and_just_before_each_change(site):
    """A box as of each change's moment shows the state it made, and a microsecond earlier the one before,
    whichever index the plan uses: a feature moved out across the box's edge and back onto it, one renamed
    twice within a second and twice in one transaction (the middle version never visible), one deleted and
    inserted again under its fid (as a revert restores it)."""
    engine, state, moments = site["engine"], {}, []

    def changed(fid, value) -> None:
        if value is None:
            del state[fid]
        else:
            state[fid] = value
        moments.append((last_change(engine)[1], dict(state)))

    inside = [120.94, 32.09]
    fids = []
    for name in ("留守", "搬迁", "两改0", "重生"):
        fids.append(post(site, next(serials), *inside, name=name))
        changed(fids[-1], (name, inside))
    _, mover, twice, reborn = fids
    # 10 m out: `&&` compares boxes rounded outward to float32 (~1e-5° here), the items endpoint exactly
    patch(site, mover, {"geometry": {"type": "Point", "coordinates": [EDGE + 1e-4, 32.09]}})
    changed(mover, None)
    patch(site, twice, {"properties": {"name": "两改1"}})
    changed(twice, ("两改1", inside))
    patch(site, twice, {"properties": {"name": "两改2"}})
    changed(twice, ("两改2", inside))
    assert moments[-1][0] - moments[-2][0] < timedelta(seconds=1)
    with engine.begin() as conn:
        for name in ("两改3", "两改4"):
            conn.execute(text(f"UPDATE layers.{LAYER} SET name = :name WHERE fid = :fid"), {"name": name, "fid": twice})
    changed(twice, ("两改4", inside))
    assert site["api"].delete(f"{ITEMS}/{reborn}", headers=bearer(site["keys"]["ecology"])).status_code == 204
    changed(reborn, None)
    patch(site, mover, {"geometry": {"type": "Point", "coordinates": [EDGE, 32.09]}})  # on the edge: in the box
    changed(mover, ("搬迁", [EDGE, 32.09]))
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO layers.{LAYER} (fid, credit_code, name, permit_class, key_unit, geom, version) "
                          "OVERRIDING SYSTEM VALUE VALUES (:fid, :code, '重生', '登记管理', false, "
                          "ST_SetSRID(ST_MakePoint(120.94, 32.09), 4490), 3)"),
                     {"fid": reborn, "code": credit_code(next(serials))})
    changed(reborn, ("重生", inside))

    for (_, before), (moment, after) in itertools.pairwise(moments):
        for at, expected in ((moment, after), (moment - timedelta(microseconds=1), before)):
            assert _box_over_http(site, fids, at) == expected, at
            assert _box_in_sql(engine, fids, at, "enable_seqscan") == expected, at
            assert _box_in_sql(engine, fids, at, "enable_indexscan", "enable_bitmapscan") == expected, at


def test_feature_history_newest_first_with_fields_and_shift(site):
    api = site["api"]
    fid = post(site, next(serials), 120.93, 32.08, address="甲")
    patch(site, fid, {"properties": {"address": "乙", "key_unit": True}})
    patch(site, fid, {"geometry": {"type": "Point", "coordinates": [120.94, 32.09]}})
    assert api.delete(f"{ITEMS}/{fid}", headers=bearer(site["keys"]["ecology"])).status_code == 204
    body = api.get(f"{ITEMS}/{fid}/history").json()
    assert body["deleted"] is True
    versions = body["versions"]
    assert [(v["version"], v["operation"]) for v in versions] == [(4, "delete"), (3, "update"), (2, "update"),
                                                                  (1, "insert")]
    assert versions[2]["changed"] == {"address": {"from": "甲", "to": "乙"}, "key_unit": {"from": False, "to": True}}
    (x0, y0), (x1, y1) = TO_METRES.transform(120.93, 32.08), TO_METRES.transform(120.94, 32.09)
    expected = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5
    assert list(versions[1]["changed"]) == ["geometry"]
    assert abs(versions[1]["changed"]["geometry"]["shift_m"] - expected) < 0.01
    assert versions[0]["feature"] is None and versions[3]["feature"]["properties"]["address"] == "甲"
    assert all(v["actor"].startswith("生态环境局/") for v in versions)
    page = api.get(f"{ITEMS}/{fid}/history", params={"limit": 3}).json()
    assert len(page["versions"]) == 3
    rest = api.get(next(link["href"] for link in page["links"] if link["rel"] == "next")).json()
    assert [v["version"] for v in rest["versions"]] == [1] and not any(l["rel"] == "next" for l in rest["links"])
    assert api.get(f"{ITEMS}/987654/history").status_code == 404
    assert api.get(f"{ITEMS}/x/history").status_code == 400
    assert api.get(f"/collections/nope/items/{fid}/history").status_code == 404


def _ids(engine, where: str, **params) -> list[int]:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT change_id FROM twin.change WHERE layer = '{LAYER}' AND {where} "
                                 "ORDER BY change_id"), params).scalars().all()


def test_layer_changes_filter_by_time_operation_actor_run_and_place(site):
    engine, api = site["engine"], site["api"]
    start = last_change(engine)[1]
    fid = post(site, next(serials), 120.975, 32.14)
    run = etl(site, [file_row(source_feature(next(serials), 0, 0)["properties"], 120.905, 32.055)])
    api.delete(f"{ITEMS}/{fid}", headers=bearer(site["keys"]["ecology"]))
    end = last_change(engine)[1]
    url = f"/collections/{LAYER}/changes"

    def ids(**params):
        return [c["id"] for c in api.get(url, params=params | {"limit": 10_000}).json()["changes"]]

    assert ids(since=start.isoformat()) == _ids(engine, "changed_at >= :t", t=start)
    assert ids(since=start.isoformat(), until=(end - timedelta(microseconds=1)).isoformat()) == \
        _ids(engine, "changed_at >= :t AND changed_at < :e", t=start, e=end)
    assert ids(operation="delete") == _ids(engine, "operation = 'delete'")
    assert ids(operation="insert,delete") == _ids(engine, "operation <> 'update'")
    prefix = site["keys"]["ecology"].split("_")[1]
    assert ids(actor=f"生态环境局/{prefix}") == _ids(engine, "actor = :a", a=f"生态环境局/{prefix}")
    assert ids(actor="生态环境局/*") == _ids(engine, "actor LIKE '生态环境局/%'")
    assert ids(actor="%") == []
    assert ids(run=run.run_id) == _ids(engine, "run_id = :r", r=run.run_id) and len(ids(run=run.run_id)) == 1
    assert ids(bbox="120.97,32.13,120.98,32.15") == _ids(
        engine, "(ST_Intersects(bbox_after, ST_MakeEnvelope(120.97, 32.13, 120.98, 32.15, 4490)) "
        "OR ST_Intersects(bbox_before, ST_MakeEnvelope(120.97, 32.13, 120.98, 32.15, 4490)))")
    first = api.get(url, params={"limit": 2}).json()
    assert len(first["changes"]) == 2
    second = api.get(next(link["href"] for link in first["links"] if link["rel"] == "next")).json()
    assert second["changes"][0]["id"] > first["changes"][1]["id"]
    bad = [{"since": "yesterday"}, {"since": end.isoformat(), "until": start.isoformat()}, {"operation": "upsert"},
           {"operation": ","}, {"bbox": "1,2,3"}, {"bbox": "3,2,1,4"}, {"bbox": "a,b,c,d"}, {"limit": 0},
           {"run": 0}, {"since": "0001-01-01T00:00:00+14:00"}, {"actor": "x" * 201}]
    for params in bad:
        response = api.get(url, params=params)
        assert response.status_code == 400 and response.json()["where"], params
    assert api.get("/collections/water_quality/changes", params={"bbox": "1,2,3,4"}).status_code == 400
    assert api.get("/collections/nope/changes").status_code == 404


def test_diff_between_two_moments(site):
    engine, api, key = site["engine"], site["api"], bearer(site["keys"]["ecology"])
    stays, moves, goes, flips = (post(site, next(serials), lon, 32.13) for lon in (120.91, 120.92, 120.93, 120.94))
    start = last_change(engine)[1]
    added = post(site, next(serials), 120.96, 32.14)
    patch(site, moves, {"properties": {"name": "搬迁后"},
                        "geometry": {"type": "Point", "coordinates": [120.92, 32.131]}})
    api.delete(f"{ITEMS}/{goes}", headers=key)
    flipped = api.get(f"{ITEMS}/{flips}/history").json()["versions"][0]["feature"]["properties"]["name"]
    patch(site, flips, {"properties": {"name": "临时"}})
    middle = last_change(engine)[1]
    patch(site, flips, {"properties": {"name": flipped}})
    body = api.get(f"/collections/{LAYER}/diff", params={"from": start.isoformat()}).json()
    assert body["counts"] == {"added": 1, "removed": 1, "modified": 1} and not body["truncated"]
    assert [a["fid"] for a in body["added"]] == [added] and [r["fid"] for r in body["removed"]] == [goes]
    assert body["removed"][0]["feature"]["geometry"]["coordinates"] == [120.93, 32.13]
    (modified,) = body["modified"]
    (x0, y0), (x1, y1) = TO_METRES.transform(120.92, 32.13), TO_METRES.transform(120.92, 32.131)
    assert modified["fid"] == moves and modified["from_version"] == 1 and modified["to_version"] == 2
    assert modified["changed"]["name"]["to"] == "搬迁后"
    assert abs(modified["changed"]["geometry"]["shift_m"] - ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5) < 0.01
    halfway = api.get(f"/collections/{LAYER}/diff", params={"from": start.isoformat(), "to": middle.isoformat()}).json()
    assert {m["fid"] for m in halfway["modified"]} == {moves, flips}  # `stays` never changed
    limited = api.get(f"/collections/{LAYER}/diff", params={"from": start.isoformat(), "to": middle.isoformat(),
                                                             "limit": 1}).json()
    assert limited["truncated"] and len(limited["modified"]) == 1 and limited["counts"]["modified"] == 2
    for params in ({}, {"from": "soon"}, {"from": middle.isoformat(), "to": start.isoformat()},
                   {"from": start.isoformat(), "limit": 10_001}):
        response = api.get(f"/collections/{LAYER}/diff", params=params)
        assert response.status_code == 400, params


def test_reverting_a_run_restores_inserts_updates_and_deletes(site, replica):
    engine, api = site["engine"], site["api"]
    kept, edited = post(site, next(serials), 120.94, 32.07), post(site, next(serials), 120.95, 32.07)
    post(site, next(serials), 120.97, 32.07)  # at least one feature the replace run deletes, whatever ran before
    before = snapshot(engine)
    keep = file_row(before[kept][0], 120.94, 32.07)
    edit = file_row(before[edited][0], 120.951, 32.071) | {"name": "改过的名字"}
    new = file_row(source_feature(next(serials), 0, 0)["properties"], 120.96, 32.07)
    run = etl(site, [keep, edit, new], mode="replace")
    assert run.counts["inserted"] == 1 and run.counts["updated"] == 1 and run.counts["unchanged"] == 1
    assert run.counts["deleted"] == len(before) - 2
    url = f"/etl/runs/{run.run_id}/revert"
    assert api.post(url).status_code == 401
    assert api.post(url, headers=bearer(site["keys"]["urban"])).status_code == 403
    response = api.post(url, headers=bearer(site["keys"]["ecology"]))
    assert response.status_code == 200, response.text
    assert response.json()["reverted"] == {"deleted": 1, "restored": 1, "reinserted": len(before) - 2}
    assert snapshot(engine) == before  # same fids, properties and geometries
    assert len(_ids(engine, "actor = :a", a=f"revert:run {run.run_id}")) == len(before)
    restored = min(set(before) - {kept, edited})
    latest, deletion = api.get(f"{ITEMS}/{restored}/history").json()["versions"][:2]
    assert (deletion["operation"], deletion["actor"]) == ("delete", "test:etl")
    assert (latest["operation"], latest["version"]) == ("insert", deletion["version"] + 1)  # versions go on
    replica.follow()
    assert replica.layer_state() == before
    again = api.post(url, headers=bearer(site["keys"]["ecology"]))
    assert again.status_code == 409 and {c["actor"] for c in again.json()["conflicts"]} == {f"revert:run {run.run_id}"}


def cli(site, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"TWIN_DATABASE_URL": site["url"], "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "twin.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_revert_is_refused_when_a_later_edit_touched_the_run(site):
    engine, api = site["engine"], site["api"]
    target = post(site, next(serials), 120.97, 32.09)
    row = file_row(snapshot(engine)[target][0], 120.97, 32.09) | {"name": "批量改名"}
    extra = file_row(source_feature(next(serials), 0, 0)["properties"], 120.975, 32.095)
    run = etl(site, [row, extra])
    patch(site, target, {"properties": {"address": "手工修改"}})
    before, log = snapshot(engine), last_change(engine)
    refused = cli(site, "etl", "revert", str(run.run_id))
    assert refused.returncode == 1 and "cannot be reverted" in refused.stderr and str(target) in refused.stdout
    response = api.post(f"/etl/runs/{run.run_id}/revert", headers=bearer(site["keys"]["ecology"]))
    assert response.status_code == 409 and response.json()["code"] == "revert_conflict"
    assert [(c["fid"], c["operation"]) for c in response.json()["conflicts"]] == [(target, "update")]
    assert response.json()["conflicts"][0]["actor"].startswith("生态环境局/")
    assert snapshot(engine) == before and last_change(engine) == log  # nothing changed
    clean = etl(site, [file_row(source_feature(next(serials), 0, 0)["properties"], 120.98, 32.1)])
    added = set(snapshot(engine)) - set(before)
    done = cli(site, "etl", "revert", str(clean.run_id))
    assert done.returncode == 0, done.stderr
    assert f"run {clean.run_id} reverted" in done.stdout and len(added) == 1
    assert snapshot(engine) == before


def test_revert_errors(site):
    api, key = site["api"], bearer(site["keys"]["ecology"])
    assert api.post("/etl/runs/999999/revert", headers=key).status_code == 404
    assert api.post("/etl/runs/abc/revert", headers=key).status_code == 400
    broken = site["files"] / "broken.csv"
    broken.write_text("credit_code,name\nx,y\n", encoding="utf-8")
    failed = run_file(site["engine"], "pollution_sources", broken, actor="test:etl")
    assert failed.status == "failed"
    response = api.post(f"/etl/runs/{failed.run_id}/revert", headers=key)
    assert response.status_code == 409 and response.json()["code"] == "run_not_succeeded"


def test_a_raster_run_is_not_revertible(site):
    from twin.auth import create_key

    with site["engine"].begin() as conn:
        run = conn.execute(text("INSERT INTO twin.etl_run (job, layer, mode, actor, status) "
                                "VALUES ('imagery', 'imagery', 'replace', 'test', 'succeeded') RETURNING id")).scalar()
        admin = create_key(conn, "管理员", [], is_admin=True)
    response = site["api"].post(f"/etl/runs/{run}/revert", headers=bearer(admin))
    assert response.status_code == 409 and response.json()["code"] == "not_revertible"


def test_as_of_pages_walk_the_past_in_order(site):
    """Items pages as of a moment (cut from the current and the history parts separately, then merged) give
    every feature of that moment once, in the asked order, across page edges."""
    engine = site["engine"]
    fids = [post(site, 9000 + n, 120.40 + n / 100, 31.51, name=f"站{n % 4}") for n in range(10)]
    posted = last_change(engine)[1]
    for n, fid in enumerate(fids[::2]):
        patch(site, fid, {"properties": {"name": f"改{n}"}})
    site["api"].delete(f"{ITEMS}/{fids[1]}", headers=bearer(site["keys"]["ecology"]))
    for moment in (posted, last_change(engine)[1]):
        then = snapshot(engine, as_of=moment)
        seen, url = [], ITEMS
        query = {"as_of": moment.isoformat(), "limit": 3, "sortby": "-name", "properties": "name"}
        while url:
            page = site["api"].get(url, params=query).json()
            seen += [(f["properties"]["name"], f["id"]) for f in page["features"]]
            url, query = next((link["href"] for link in page["links"] if link["rel"] == "next"), None), None
        assert sorted(fid for _, fid in seen) == sorted(then) and len(then) >= 10
        names = [name for name, _ in seen]
        nulls = [n for n in names if n is None]
        assert names[:len(nulls)] == nulls and names[len(nulls):] == sorted(names[len(nulls):], reverse=True)
        for (name, a), (other, b) in itertools.pairwise(seen):
            assert name != other or a < b  # ties by fid, ascending


def test_a_layer_extent_follows_its_changes(site):
    """/collections serves the extent it knows at once and works it out again in the background after a change
    (layers.extents): a feature placed beyond the layer soon widens it, and its removal narrows it again."""
    api = site["api"]

    def bbox() -> list[float]:
        spatial = api.get(f"/collections/{LAYER}").json().get("extent", {}).get("spatial")
        return spatial["bbox"][0] if spatial else [0, 0, 0, 0]

    def settled(check) -> list[float]:
        deadline = time.monotonic() + 10
        while not check(box := bbox()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return box

    post(site, 9900, 120.95, 32.10)  # the layer has something in it, whatever ran before
    before = settled(lambda b: b[0] <= 120.95 <= b[2])
    east, north = min(before[2] + 0.01, 121.2), min(before[3] + 0.01, 32.3)
    fid = post(site, 9901, east, north)
    assert settled(lambda b: b[2] >= east - 1e-6 and b[3] >= north - 1e-6)[:2] == pytest.approx(before[:2])
    assert api.delete(f"{ITEMS}/{fid}", headers=bearer(site["keys"]["ecology"])).status_code == 204
    assert settled(lambda b: b == pytest.approx(before)) == pytest.approx(before)
