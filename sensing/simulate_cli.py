"""`twin simulate`: the command line of sensing.simulate."""

import asyncio
from contextlib import nullcontext
from datetime import timedelta

import httpx
import typer

from sensing.simulate import PATHS, Options, run, temporary_key
from twin.settings import get_settings


def mqtt_url() -> str | None:
    """Where devices reach the broker: TWIN_MQTT_URL, or the managed broker's; None when there is none."""
    from twin import broker

    settings = get_settings()
    try:
        return broker.client_url(settings) if settings.mqtt_url or broker.Broker.of(settings).initialized else None
    except broker.BrokerError:
        return None


def simulate(
    url: str = typer.Option(None, help="the server (default: TWIN_HOST:TWIN_PORT)"),
    key: str = typer.Option(None, envvar="TWIN_SIMULATE_KEY",
                            help="a key of 生态环境局 writing water_quality (default: one made for the run, "
                                 "revoked after)"),
    paths: str = typer.Option(",".join(PATHS), help="comma-separated: http, hj212, mqtt"),
    rate: float = typer.Option(12.0, min=0.1, max=3600, help="readings per device per simulated hour"),
    speed: float = typer.Option(1.0, min=0.1, max=10_000, help="time speed-up: simulated seconds per second"),
    since: float = typer.Option(0.0, min=0, max=24 * 30, help="the simulated clock starts this many hours ago"),
    duration: float = typer.Option(None, min=0, help="stop after this many seconds (default: run until stopped)"),
    seed: int = typer.Option(42, help="the same seed gives the same feeds and episodes"),
    devices: int = typer.Option(None, min=1, help="at most this many stations and this many sources (default all)"),
    mqtt: str = typer.Option(None, "--mqtt-url", help="the broker (default: TWIN_MQTT_URL or the managed one)"),
    hj212_port: int = typer.Option(None, help="the server's HJ 212 port (default: TWIN_HJ212_PORT)"),
):
    """Live feeds into a running server: water-quality stations over SensorThings HTTP and MQTT, online pollution
    sources over HJ 212 (diurnal dissolved oxygen, a rain event, a pollution episode, a station going silent).
    Stops on SIGTERM or Ctrl-C."""
    settings = get_settings()
    chosen = tuple(p.strip() for p in paths.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PATHS]
    if unknown or not chosen:
        raise typer.BadParameter(f"paths are some of {', '.join(PATHS)}; not {', '.join(unknown) or '(none)'}",
                                 param_hint="--paths")
    with nullcontext(key) if key else temporary_key() as used:
        options = Options(url or f"http://{settings.host}:{settings.port}", used, chosen,
                          hj212_host=settings.hj212_host, hj212_port=hj212_port or settings.hj212_port,
                          mqtt_url=mqtt or (mqtt_url() if "mqtt" in chosen else None), rate=rate, speed=speed,
                          since=timedelta(hours=since), duration_s=duration, seed=seed,
                          devices=devices)
        try:
            asyncio.run(run(options))
        except httpx.TransportError as e:
            typer.echo(f"error: the server at {options.base_url} does not answer ({e!r}); start it: twin serve",
                       err=True)
            raise typer.Exit(1) from None
