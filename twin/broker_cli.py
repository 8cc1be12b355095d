"""`twin broker …`: the managed mosquitto (twin.broker), or where TWIN_MQTT_URL points."""

import typer

from twin import broker
from twin.console import console, fail
from twin.db import DatabaseError, sync_engine
from twin.settings import get_settings

app = typer.Typer(help="The MQTT broker: the managed local mosquitto, or TWIN_MQTT_URL.", no_args_is_help=True)


@app.command("up")
def up():
    """Start the managed mosquitto (initialising it the first time) with users and ACLs from the keys."""
    settings = get_settings()
    if not broker.managed(settings):
        console.print(f"TWIN_MQTT_URL is set: using {broker.client_url(settings)}, no local broker started.")
        return
    try:
        with sync_engine().begin() as conn:
            status = broker.Broker.of(settings).up(conn)
    except (broker.BrokerError, DatabaseError) as e:
        fail(str(e))
    console.print(f"mosquitto running on {settings.mqtt_host}:{status.port} (pid {status.pid}, "
                  f"files in {status.directory})")


@app.command("down")
def down():
    """Stop the managed mosquitto (it saves its queued messages first)."""
    broker.Broker.of(get_settings()).down()
    console.print("stopped")


@app.command("status")
def status():
    """Is the managed broker running, where; exit status 3 when it is not."""
    settings = get_settings()
    if not broker.managed(settings):
        console.print(f"external broker {broker.client_url(settings)} (TWIN_MQTT_URL)")
        return
    state = broker.Broker.of(settings).status()
    console.print(f"managed mosquitto: {'running, pid ' + str(state.pid) if state.running else 'stopped'}"
                  f"{'' if state.initialized else ' (not initialised)'}, port {state.port}, files {state.directory}")
    if not state.running:
        raise typer.Exit(3)


@app.command("url")
def url():
    """Print the URL devices and readers connect to (their key's prefix is the username, the key the password)."""
    try:
        print(broker.client_url(get_settings()))
    except broker.BrokerError as e:
        fail(str(e))
