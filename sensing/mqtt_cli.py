"""`twin ingest mqtt`: MQTT ingest as a process of its own (docs/mqtt.md)."""

import signal
import threading

import typer
from prometheus_client import start_http_server

from sensing.mqtt_service import ingest_until
from twin import broker
from twin.console import console, fail
from twin.settings import get_settings

app = typer.Typer(help="Ingest observations from the live feeds.", no_args_is_help=True)


@app.command("mqtt")
def mqtt(metrics_port: int = typer.Option(0, help="serve this process's Prometheus metrics (twin_mqtt_*) on "
                                          "127.0.0.1:PORT/metrics; 0: none")):
    """Store what devices publish to v1.1/Datastreams(<id>)/Observations, acknowledging each message after its
    commit, and publish what it stored; joins the ingest's shared subscription. Stops on SIGTERM
    or SIGINT after the batch in hand."""
    settings = get_settings()
    if broker.service_url(settings) is None:
        fail("no MQTT broker: set TWIN_MQTT_URL or start the managed one (twin broker up)")
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")
    stopped = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopped.set())
    console.print(f"ingesting from {broker.client_url(settings)}")
    ingest_until(stopped, settings, publish=True)  # only the ingest stores here: it publishes what it stored
