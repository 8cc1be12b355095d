"""Readings that arrive over HJ 212 (a discharger's data logger on a raw socket) reach `GET /stream?topics=
observations` like the stations' readings, each with an event id in the change log's order: a client that
reconnects with Last-Event-ID gets exactly the readings it missed; a refused packet sends nothing."""

import threading
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from tests.events_support import SseClient, bearer, events_server
from tests.server_support import free_port
from tests.sta_support import keys
from tests.test_hj212_ingest import CHINA, factor_stream, packet, send
from tests.tile_support import wait_for

MN = "88888880000077"
FACTORS = (("w01018", "化学需氧量"), ("w21003", "氨氮"))


@pytest.fixture(scope="module")
def plant(database_url, data_dir, loaded, engine):
    """A server listening for HJ 212, and a discharger's Thing (standing for no feature) with two Datastreams."""
    port = free_port()
    with events_server(database_url, data_dir, "stream-hj212", hj212_port=port) as base, \
            httpx.Client(base_url=base, timeout=30) as http:
        key = keys(engine)["ecology"]
        thing = {"name": "某电镀有限公司", "description": "重点排污单位", "properties": {"hj212_mn": MN}}
        made = http.post("/sta/v1.1/Things", json=thing, headers=bearer(key))
        assert made.status_code == 201, made.text
        thing_id = int(made.headers["Location"].rsplit("(", 1)[1].rstrip(")"))
        for code, name in FACTORS:
            factor_stream(http, key, thing_id, MN, code, name)
        yield {"base": base, "port": port, "thing": thing_id}


def following(client: SseClient) -> bool:
    return wait_for(lambda: client.heartbeats > 0, 10)


def of_thing(client: SseClient, thing: int) -> list:
    return [e for e in client.events if e[2].get("thing", {}).get("@iot.id") == thing]


def reading(when: datetime, cod: float, ammonia: float, qn: str) -> str:
    return packet("2011", when, f"w01018-Rtd={cod},w01018-Flag=N;w21003-Rtd={ammonia},w21003-Flag=N", mn=MN, qn=qn)


def last_event(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT greatest((SELECT max(change_id) FROM twin.change), "
                                 "(SELECT max(event_id) FROM events.observation_event))")).scalar_one()


def test_an_hj212_packet_reaches_an_sse_client_and_a_reconnect_resumes_exactly(plant, engine):
    start = last_event(engine)
    when = datetime.now(CHINA).replace(microsecond=0) - timedelta(minutes=30)
    client = SseClient(plant["base"], {"topics": "observations"})
    assert following(client)
    [answer] = send(plant["port"], reading(when, 41.5, 2.25, "20261206120000101"), answers=1)
    assert "CN=9014" in answer.decode()  # acknowledged: stored
    assert wait_for(lambda: len(of_thing(client, plant["thing"])) >= 2, 10)
    mine = of_thing(client, plant["thing"])
    assert {e[1] for e in mine} == {"observation"}
    assert sorted((e[2]["datastream"]["factor"], e[2]["observation"]["result"]) for e in mine) == \
        [("w01018", 41.5), ("w21003", 2.25)]
    assert all(e[0] > start for e in mine) and client.ids() == sorted(set(client.ids()))
    assert mine[0][2]["layer"] == "things"
    assert datetime.fromisoformat(mine[0][2]["observation"]["phenomenonTime"]) == when
    client.close()
    last = client.ids()[-1]
    # two packets while nobody listens; a refused one (an unknown device) between them stores and sends nothing
    send(plant["port"], reading(when + timedelta(minutes=1), 50.0, 3.0, "20261206120000102"), answers=1)
    refused = packet("2011", when, "w01018-Rtd=99,w01018-Flag=N", mn="99999990000001", qn="20261206120000103")
    [answer] = send(plant["port"], refused, reading(when + timedelta(minutes=2), 60.0, 4.0, "20261206120000104"),
                    answers=1)  # one connection: the refused packet was handled (unanswered) before the next
    assert "QN=20261206120000104" in answer.decode()
    again = SseClient(plant["base"], {"topics": "observations"}, {"Last-Event-ID": str(last)})
    assert wait_for(lambda: len(again.events) >= 4, 10)
    assert following(again)
    again.close()
    assert [(e[2]["datastream"]["factor"], e[2]["observation"]["result"]) for e in again.events] == \
        [("w01018", 50.0), ("w21003", 3.0), ("w01018", 60.0), ("w21003", 4.0)]
    assert again.ids()[0] > last and again.ids() == sorted(set(again.ids()))


def test_a_client_asking_for_layers_gets_no_reading_of_a_thing_outside_them(plant):
    client = SseClient(plant["base"], {"topics": "observations", "layers": "pollution_sources"})
    assert following(client)
    when = datetime.now(CHINA).replace(microsecond=0) - timedelta(minutes=20)
    send(plant["port"], reading(when, 10.0, 1.0, "20261206120000105"), answers=1)
    assert wait_for(lambda: client.heartbeats >= 3, 10)  # time for anything that would arrive
    client.close()
    assert client.events == []


def test_an_observation_holds_the_change_logs_writer_lock_so_ids_follow_commit_order(plant, engine):
    """A transaction that stored an observation keeps every layer write waiting until it commits: the write
    gets a change id after the observation's event id, as the commit order has it."""
    with engine.connect() as conn:
        stream = conn.execute(text("SELECT d.id FROM sensing.datastream d WHERE d.thing_id = :thing ORDER BY d.id "
                                   "LIMIT 1"), {"thing": plant["thing"]}).scalar_one()
    first = engine.connect()
    first.begin()
    first.execute(text("INSERT INTO sensing.observation (datastream_id, phenomenon_time, result) "
                       "VALUES (:stream, now() - interval '10 minutes', 7)"), {"stream": stream})
    observed = first.execute(text("SELECT max(event_id) FROM events.observation_event")).scalar_one()
    holder = first.execute(text("SELECT pg_backend_pid()")).scalar_one()
    written = {}

    def write():
        with engine.begin() as conn:
            written["pid"] = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            conn.execute(text("INSERT INTO layers.city_components (code, status, geom) VALUES "
                              "('OBS-ORDER', '完好', ST_SetSRID(ST_MakePoint(120.4, 31.5), 4490))"))
            written["change"] = conn.execute(text("SELECT max(change_id) FROM twin.change")).scalar_one()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        def waiting() -> bool:
            with engine.connect() as conn:
                return "pid" in written and conn.execute(text(
                    "SELECT :holder = ANY(pg_blocking_pids(:pid))"), {"holder": holder, "pid": written["pid"]}).scalar()

        assert wait_for(waiting, 10), "the layer write did not wait for the observation's transaction"
        first.commit()
        writer.join(10)
        assert written["change"] > observed
    finally:
        first.close()
        writer.join(10)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM layers.city_components WHERE code = 'OBS-ORDER'"))


def test_readings_stored_while_only_changes_are_followed_reach_a_client_of_readings(plant, engine):
    """While no client wants `observations`, the hub reads the change log only and passes over the readings'
    ids (events/hub.py): a client of readings coming later from an id before them still gets them from the
    feed, then the next ones live, while the client of changes gets none."""
    changes = SseClient(plant["base"], {"topics": "changes"})
    assert following(changes)
    start = last_event(engine)
    when = datetime.now(CHINA).replace(microsecond=0) - timedelta(minutes=15)
    send(plant["port"], reading(when, 20.0, 2.0, "20261206120000106"), answers=1)
    readings = SseClient(plant["base"], {"topics": "observations"}, {"Last-Event-ID": str(start)})
    assert wait_for(lambda: len(of_thing(readings, plant["thing"])) >= 2, 10)
    assert following(readings)
    send(plant["port"], reading(when + timedelta(minutes=1), 21.0, 2.5, "20261206120000107"), answers=1)
    assert wait_for(lambda: len(of_thing(readings, plant["thing"])) >= 4, 10)
    readings.close()
    changes.close()
    assert sorted(e[2]["observation"]["result"] for e in of_thing(readings, plant["thing"])) == [2.0, 2.5, 20.0, 21.0]
    assert readings.ids() == sorted(set(readings.ids())) and readings.ids()[0] > start
    assert not [e for e in changes.events if e[1] == "observation"]
