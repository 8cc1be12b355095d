"""The `twin` command as a person uses it: keys, the catalog, JSON logs."""

import json
import os
import signal
import socket
import subprocess
import sys

import httpx
import psutil
import pytest
from sqlalchemy import text

from tests.conftest import REPO
from tests.tile_support import wait_for


def twin(*args, **env):
    return subprocess.run([sys.executable, "-m", "twin.cli", *args], cwd=REPO, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120, env={**os.environ, **env})


def test_help_lists_every_command():
    out = twin("--help").stdout
    for command in ("db", "keys", "layers", "etl", "sample", "demo", "serve", "tiles"):
        assert command in out


def test_keys_create_prints_the_key_once_and_stores_only_its_hash(engine):
    created = twin("keys", "create", "--department", "生态环境局", "--layers", "pollution_sources,monitoring_stations")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.count("\n") == 0 and key.startswith("twin_")  # the key alone on stdout
    prefix, secret = key.split("_")[1], key.split("_", 2)[2]
    with engine.connect() as conn:
        row = conn.execute(text("SELECT department, layers, secret_hash FROM twin.api_key WHERE prefix = :p"),
                           {"p": prefix}).one()
    assert row.department == "生态环境局" and row.layers == ["pollution_sources", "monitoring_stations"]
    assert secret not in row.secret_hash
    listed = twin("keys", "list").stdout
    assert prefix in listed and secret not in listed
    assert twin("keys", "revoke", prefix).returncode == 0
    assert twin("keys", "revoke", prefix).returncode == 1  # already revoked: said, non-zero


def test_keys_for_unknown_layers_are_refused(engine):
    refused = twin("keys", "create", "--department", "城市管理局", "--layers", "city_components,nope")
    assert refused.returncode == 1 and "unknown layers: nope" in refused.stderr


def test_layers_list_prints_the_catalog():
    out = twin("layers", "list", COLUMNS="200").stdout
    assert "city_components" in out and "城市部件" in out and "pollution_sources" in out


def test_json_logs_are_one_object_per_line(engine, tmp_path):
    bad = tmp_path / "empty.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": []}')
    result = twin("etl", "run", "boundaries", str(bad), "--layer", "streets", "--mode", "replace", TWIN_LOG_JSON="1")
    lines = [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines, result.stderr
    entry = json.loads(lines[-1])
    assert {"time", "level", "logger", "message"} <= set(entry)


def test_listings_print_full_values_when_piped_and_json_for_scripts(engine, loaded, tmp_path):
    long_name = "a_department_file_name_much_longer_than_eighty_columns_of_a_terminal_" + "x" * 40 + ".geojson"
    bad = tmp_path / long_name
    bad.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
                   '{"type": "Point", "coordinates": [120.4, 31.5]}, "properties": {"name": "no code"}}]}')
    twin("etl", "run", "boundaries", str(bad), "--layer", "streets")  # its only row is quarantined
    piped = twin("etl", "runs", "--limit", "1").stdout.splitlines()  # stdout is a pipe here, not a terminal
    header, row = piped[0].split("\t"), piped[1].split("\t")
    assert header[:5] == ["id", "job", "layer", "file", "status"] and row[3] == long_name
    runs = json.loads(twin("etl", "runs", "--limit", "1", "--json").stdout)
    assert runs[0]["file"] == long_name and runs[0]["quarantined"] == 1
    rejected = json.loads(twin("etl", "quarantine", str(runs[0]["id"]), "--json").stdout)
    assert len(rejected) == 1 and rejected[0]["record"]["name"] == "no code" and rejected[0]["reason"]
    layers = {layer["id"]: layer for layer in json.loads(twin("layers", "list", "--json").stdout)}
    assert layers["city_components"]["名称"] == "城市部件"
    keys = json.loads(twin("keys", "list", "--json").stdout)
    assert isinstance(keys, list) and all("secret" not in json.dumps(k) for k in keys)


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_stops_with_its_server_on_sigterm(database_url, data_dir, workers):
    """`twin serve` becomes the server it runs (exec): SIGTERM to its PID stops every server process and frees
    the port; nothing is left re-parented to PID 1 and listening."""
    from tests.server_support import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "twin.cli", "serve", "--port", str(port), "--workers",
                                str(workers)], cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=os.environ | {"TWIN_DATABASE_URL": database_url,
                                                                            "TWIN_DATA_DIR": str(data_dir)})
    try:
        assert wait_for(lambda: answers(port), 60), "the server did not start"
        tree = [process.pid] + [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
        assert len(tree) >= workers + (workers > 1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) is not None
        assert wait_for(lambda: not any(map(running, tree)), 10)
        with socket.socket() as s:  # the port is free again
            s.bind(("127.0.0.1", port))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
