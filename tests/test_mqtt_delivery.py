"""Acknowledged means stored, over MQTT: every QoS 1 publication is stored exactly once although the ingest
process is SIGKILLed mid-stream and restarted, and nothing the broker acknowledged is lost across a restart of
the broker while no ingest runs, and a running ingest connects again after one."""

import signal
import threading
from datetime import datetime, timedelta, timezone

import orjson
from sqlalchemy import text

from tests.broker_support import (broker, counter, device, ingest_process, keys, mqtt_server,  # noqa: F401
                                  streams, wait_for)

START = datetime(2026, 4, 1, tzinfo=timezone.utc)


def topic(stream: int) -> str:
    return f"v1.1/Datastreams({stream})/Observations"


def stored(engine, stream: int) -> tuple[int, int, float]:
    """(rows, distinct times, sum of results) of the stream's observations in April 2026."""
    with engine.connect() as conn:
        return tuple(conn.execute(text(
            "SELECT count(*), count(DISTINCT phenomenon_time), coalesce(sum(result), 0) FROM sensing.observation "
            "WHERE datastream_id = :stream AND phenomenon_time >= :start "
            "AND phenomenon_time < :start + interval '1 month'"),
            {"stream": stream, "start": START}).one())


def probe_stored(engine, stream: int, moment: datetime) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM sensing.observation WHERE datastream_id = :stream "
                                 "AND phenomenon_time = :moment"), {"stream": stream, "moment": moment}).scalar() == 1


def publish_all(sender, stream: int, first: int, count: int) -> list[int]:
    return [sender.publish(topic(stream), orjson.dumps({"phenomenonTime": (START + timedelta(minutes=i)).isoformat(),
                                                        "result": i})) for i in range(first, first + count)]


def test_every_qos1_message_is_stored_exactly_once_across_a_sigkill_of_the_ingest(broker, keys, streams, engine,
                                                                                   data_dir):
    n, stream = 3000, streams["ecology"]
    with device(broker, keys["ecology"]) as sender:
        with ingest_process(data_dir, "mqtt-ingest-killed.log", mqtt_batch="200") as (process, metrics):
            mids: list[int] = []
            publishing = threading.Thread(target=lambda: mids.extend(publish_all(sender, stream, 0, n)))
            publishing.start()
            assert wait_for(lambda: stored(engine, stream)[0] >= n // 10, timeout=30, step=0.01)
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed_at = stored(engine, stream)[0]
            publishing.join()
        assert 0 < killed_at < n, f"{killed_at} of {n} stored when the ingest was killed: not mid-stream"
        assert not any(sender.acked(mid).is_failure for mid in mids)  # the broker took every one
        with ingest_process(data_dir, "mqtt-ingest-restarted.log") as (process, metrics):
            assert wait_for(lambda: stored(engine, stream)[0] == n, timeout=40), stored(engine, stream)
            assert counter(metrics, "stored") > 0
    assert stored(engine, stream) == (n, n, sum(range(n)))


def test_a_broker_restart_loses_nothing_it_acknowledged(broker, keys, streams, engine, data_dir):
    m, stream, first = 300, streams["ecology_count"], 5000
    with device(broker, keys["ecology"]) as sender:
        with ingest_process(data_dir, "mqtt-ingest-before.log"):  # its persistent session made, then it is away
            probe = START + timedelta(days=40)  # outside the month counted
            sender.publish(topic(streams["ecology"]), orjson.dumps({"phenomenonTime": probe.isoformat(), "result": 1}))
            assert wait_for(lambda: probe_stored(engine, streams["ecology"], probe), timeout=20)
        mids = publish_all(sender, stream, first, m)
        assert not any(sender.acked(mid).is_failure for mid in mids)
    broker.down()
    with engine.begin() as conn:
        broker.up(conn)
    with ingest_process(data_dir, "mqtt-ingest-after.log"):
        assert wait_for(lambda: stored(engine, stream)[0] == m, timeout=30), stored(engine, stream)
    assert stored(engine, stream) == (m, m, sum(range(first, first + m)))


def test_a_running_ingest_connects_again_after_the_broker_restarts(broker, keys, streams, engine, data_dir):
    stream, moment = streams["ecology"], START + timedelta(days=45)  # outside the month the other tests count
    with ingest_process(data_dir, "mqtt-ingest-reconnects.log") as (process, metrics):
        broker.down()
        with engine.begin() as conn:
            broker.up(conn)
        with device(broker, keys["ecology"]) as sender:

            def stored_again() -> bool:  # published until one is stored: the ingest is back
                body = orjson.dumps({"phenomenonTime": moment.isoformat(), "result": 2})
                assert not sender.acked(sender.publish(topic(stream), body)).is_failure
                return wait_for(lambda: probe_stored(engine, stream, moment), timeout=1)
            assert wait_for(stored_again, timeout=30), \
                (data_dir / "mqtt-ingest-reconnects.log").read_text(errors="replace")[-3000:]
        assert process.poll() is None
