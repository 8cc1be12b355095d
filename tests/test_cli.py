"""The `twin` command as a person uses it: keys, the catalog, JSON logs."""

import json
import os
import subprocess
import sys

from sqlalchemy import text

from tests.conftest import REPO


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
