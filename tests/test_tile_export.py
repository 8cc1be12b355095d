"""`twin tiles export`: the offline PMTiles package, read back with GDAL's PMTiles driver."""

import subprocess
import sys

import pyogrio
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from tests.conftest import REPO

DISTRICT = "120.30,31.40,120.56,31.60"


def twin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from twin.cli import app; app()", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def package(loaded, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "xinwu.pmtiles"
    done = twin("tiles", "export", "--bbox", DISTRICT, "--minzoom", "10", "--maxzoom", "13",
                "--layers", "city_components,roads,districts", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_gdal_reads_the_package(package, engine):
    assert sorted(name for name, _ in pyogrio.list_layers(package)) == ["city_components", "districts", "roads"]
    info = pyogrio.read_info(package, layer="city_components")
    assert info["driver"] == "PMTiles" and info["crs"] == "EPSG:3857"
    assert {"code", "status", "point_count"} <= set(info["fields"])
    frame = pyogrio.read_dataframe(package, layer="city_components", ZOOM_LEVEL="13")
    with engine.connect() as conn:
        codes = set(conn.execute(text("SELECT code FROM layers.city_components")).scalars())
        roads = set(conn.execute(text("SELECT name FROM layers.roads")).scalars())
    assert set(frame["code"]) == codes
    assert set(pyogrio.read_dataframe(package, layer="roads", ZOOM_LEVEL="13")["name"]) == roads
    clustered = pyogrio.read_dataframe(package, layer="city_components", ZOOM_LEVEL="10")
    assert clustered["point_count"].sum() == len(codes) and len(clustered) < len(codes)


@pytest.mark.parametrize("args, message", [
    (["--bbox", "120.6,31.4,120.3,31.6"], "west < east"),
    (["--bbox", "east,of,eden"], "--bbox takes"),
    (["--bbox", DISTRICT, "--layers", "nowhere"], "not vector layers: nowhere"),
    (["--bbox", DISTRICT, "--layers", "imagery"], "not vector layers: imagery"),
    (["--bbox", DISTRICT, "--minzoom", "9", "--maxzoom", "30"], "maxzoom"),
    (["--bbox", DISTRICT, "--maxzoom", "18", "--max-tiles", "100"], "more than the limit"),
    (["--bbox", "10,10,10.01,10.01", "--minzoom", "12", "--maxzoom", "12"], "nothing to write"),
])
def test_bad_exports_fail_with_a_reason(loaded, tmp_path, args, message):
    from twin.cli import app

    out = tmp_path / "out.pmtiles"
    done = CliRunner().invoke(app, ["tiles", "export", *args, str(out)])
    assert done.exit_code == 1 and message in " ".join(done.stderr.split()), done.stderr
    assert not out.exists()
