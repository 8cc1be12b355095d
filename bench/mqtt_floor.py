"""The MQTT floor of the ingest: what paho and the broker alone take to deliver a backlog of observations.

A bare subscriber with its own persistent session (MQTT 3.1.1, QoS 1, one thread through sensing.mqtt_loop, as the
ingest receives) acknowledges each message and does nothing else: no parsing, no database, no publication. Its
session is made before the backlog is published, so the broker keeps the same messages for it as for the ingest;
`bench.mqtt_ingest --backlog` drains it after the ingest, on the same broker, and prints both side by side.
"""

import multiprocessing
import threading
import time

import psutil

TOPIC = "v1.1/+/Observations"  # the ingest's subscription without its shared group
CLIENT_ID = "bench-floor"


def _client(settings):
    from sensing.mqtt import client, connect

    mqtt = client(settings, CLIENT_ID, session=True)
    connect(mqtt, settings, loop=False)
    return mqtt


def subscribe(settings) -> None:
    """Make the floor's persistent session and its subscription, then leave (the broker keeps its messages)."""
    from sensing.mqtt_loop import Loop

    mqtt, done = _client(settings), threading.Event()
    mqtt.on_connect = lambda c, u, f, reason, p: c.subscribe(TOPIC, qos=1)
    mqtt.on_subscribe = lambda *_: done.set()
    loop = Loop([mqtt], threading.Event())
    until = time.monotonic() + 10
    while not done.is_set() and time.monotonic() < until:
        loop.pump(0.05)
    if not done.is_set():
        raise RuntimeError("the floor's subscriber was not subscribed in 10 s")
    mqtt.disconnect()
    loop.pump(0.1)


def _drain(backlog: int, received, first, last, cpu) -> None:
    from sensing.mqtt_loop import Loop
    from twin.settings import get_settings

    mqtt = _client(get_settings())
    stopping = threading.Event()

    def on_message(client, userdata, message) -> None:
        if received.value == 0:
            first.value, cpu[0] = time.monotonic(), time.process_time()
        received.value += 1
        last.value, cpu[1] = time.monotonic(), time.process_time()

    mqtt.on_message = on_message
    loop = Loop([mqtt], stopping)
    while received.value < backlog and (not last.value or time.monotonic() - last.value < 10):
        loop.pump(0.2)
    mqtt.disconnect()
    loop.pump(0.1)


def drain(backlog: int, broker_pid: int) -> str:
    """Deliver the floor's backlog to a bare subscriber in a process of its own; a line with the messages/s from
    the first to the last, and the subscriber's and the broker's CPU per 1,000 meanwhile."""
    received, first, last = multiprocessing.Value("l", 0), multiprocessing.Value("d", 0.0), multiprocessing.Value("d", 0.0)
    cpu = multiprocessing.Array("d", 2)  # the subscriber's CPU seconds at its first and its last message
    process = multiprocessing.Process(target=_drain, args=(backlog, received, first, last, cpu))
    broker = psutil.Process(broker_pid)
    broker_before = sum(broker.cpu_times()[:2])
    process.start()
    process.join()
    broker_cpu, subscriber_cpu = sum(broker.cpu_times()[:2]) - broker_before, cpu[1] - cpu[0]
    n, seconds = received.value, last.value - first.value
    if n == 0 or seconds <= 0:
        return f"paho floor: {n:,} of {backlog:,} messages delivered to the bare subscriber"
    return (f"paho floor (a bare paho subscriber acknowledging, nothing else): {n:,} of {backlog:,} messages in "
            f"{seconds:.1f} s: {n / seconds:,.0f} messages/s; CPU per 1,000 (ms): subscriber "
            f"{subscriber_cpu * 1e6 / n:,.0f}, broker {broker_cpu * 1e6 / n:,.0f}")
