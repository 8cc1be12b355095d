"""Point-in-time recovery of the managed cluster (twin.pitr, pgBackRest), through the real CLI: a district
written through the ETL, the API and live observations; a moment noted; more writes; PostgreSQL killed and its
data directory deleted (cluster.json too); `twin db restore --to` the moment brings back exactly what `as_of` reads
showed."""

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

from etl.run import run_file
from tests.conftest import REPO, reachable_tmpdir
from tests.etl_support import component_codes, district_points, engine_for
from tests.history_support import department_keys, source_feature
from tests.server_support import logged_server
from tests.sta_support import bearer
from tests.test_etl_runs import components_csv
from twin.cluster import Cluster
from twin.pitr import Archive, ArchiveError, parse_moment
from twin.cli import app
from twin.settings import Settings, get_settings

TWIN = [str(Path(sys.executable).with_name("twin"))]
LAYERS = ("city_components", "pollution_sources")


@pytest.fixture(scope="module")
def site():
    """A managed cluster of its own, archiving into its repository, started by `twin db up`."""
    root = reachable_tmpdir("twin-pitr-")
    env = {k: v for k, v in os.environ.items() if k != "TWIN_DATABASE_URL"} | {"TWIN_DATA_DIR": str(root / "var")}

    def twin(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*TWIN, "db", *args], env=env, cwd=REPO, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=300)

    up = twin("up")
    assert up.returncode == 0, up.stderr
    assert "first base backup" in " ".join(up.stdout.split())
    yield root, twin
    get_settings.cache_clear()
    Cluster(root / "var").down()
    shutil.rmtree(root, ignore_errors=True)


def twin_here(root: Path, *args: str):
    """`twin db …` in this process (a new process costs seconds of imports), on this module's cluster."""
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["db", *args], env={"TWIN_DATABASE_URL": None,
                                                           "TWIN_DATA_DIR": str(root / "var")})
    finally:
        get_settings.cache_clear()


def observation_stream(http: httpx.Client, key: str) -> int:
    """A monitoring Thing with one Datastream, made by deep insert over /sta/v1.1."""
    thing = {"name": "恢复测试站", "description": "PITR",
             "Locations": [{"name": "站点", "description": "站点", "encodingType": "application/geo+json",
                            "location": {"type": "Point", "coordinates": [120.41, 31.52]}}],
             "Datastreams": [{"name": "溶解氧", "description": "溶解氧", "observationType":
                              "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                              "unitOfMeasurement": {"name": "mg/L", "symbol": "mg/L", "definition": "ucum"},
                              "Sensor": {"name": "探头", "description": "探头", "encodingType": "text/html",
                                         "metadata": ""},
                              "ObservedProperty": {"name": "溶解氧", "definition": "urn:dissolved-oxygen",
                                                   "description": "溶解氧"}}]}
    made = http.post("/sta/v1.1/Things", json=thing, headers=bearer(key))
    assert made.status_code == 201, made.text
    return http.get(made.headers["location"] + "/Datastreams").json()["value"][0]["@iot.id"]


def observe(http: httpx.Client, key: str, stream: int, first: int, n: int) -> None:
    rows = [[f"2026-12-01T{i // 60 % 24:02d}:{i % 60:02d}:00+08:00", 7.0 + i / 100] for i in range(first, first + n)]
    response = http.post("/sta/v1.1/CreateObservations", headers=bearer(key), json=[
        {"Datastream": {"@iot.id": stream}, "components": ["phenomenonTime", "result"], "dataArray": rows}])
    assert response.status_code == 201, response.text


def reads(http: httpx.Client, stream: int, fid: int, as_of: str | None = None) -> dict:
    """Features of both layers, the whole change feed, one feature's history and the stream's observations."""
    at = {"as_of": as_of} if as_of else {}
    out = {layer: sorted(http.get(f"/collections/{layer}/items", params={"limit": 1000} | at).json()["features"],
                         key=lambda f: f["id"]) for layer in LAYERS}
    feed = http.get("/changes", params={"after": 0, "limit": 10_000}).json()["changes"]
    until = datetime.fromisoformat(as_of) if as_of else None
    out["changes"] = [c for c in feed if until is None or datetime.fromisoformat(c["time"]) <= until]
    out["history"] = http.get(f"/collections/pollution_sources/items/{fid}/history").json()["versions"]
    out["observations"] = http.get(f"/sta/v1.1/Datastreams({stream})/Observations", params={
        "$orderby": "phenomenonTime asc", "$top": "1000", "$select": "phenomenonTime,result"}).json()["value"]
    return out


def test_restore_to_a_moment_after_the_disk_is_lost(site, tmp_path):
    root, twin = site
    archive = Archive(Settings(data_dir=root / "var"))
    url = archive.cluster.url()
    engine = engine_for(url)
    codes = component_codes(800_000, 40)
    lon, lat = np.round(district_points(40, seed=11), 7)
    assert run_file(engine, "city_components", components_csv(tmp_path / "a.csv", codes, lon, lat)).status \
        == "succeeded"
    department = department_keys(engine)
    with logged_server(url, root, root / "server.log") as base, httpx.Client(base_url=base, timeout=30) as http:
        fid = http.post("/collections/pollution_sources/items", json=source_feature(1, 120.93, 32.1),
                        headers=bearer(department["ecology"])).json()["id"]
        edited = http.patch(f"/collections/pollution_sources/items/{fid}", json={"properties": {"name": "第二版"}},
                            headers=bearer(department["ecology"]) | {"Content-Type": "application/merge-patch+json"})
        assert edited.status_code == 200, edited.text
        stream = observation_stream(http, department["ecology"])
        observe(http, department["ecology"], stream, 0, 30)
        assert run_file(engine, "city_components", components_csv(tmp_path / "b.csv", codes[:10], lon[:10] + 1e-4,
                                                                  lat[:10], "破损")).status == "succeeded"
        time.sleep(0.5)
        with psycopg.connect(url) as conn:
            moment = conn.execute("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                  "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')").fetchone()[0]
        before = reads(http, stream, fid)
        time.sleep(0.5)
        # after the moment: more of every kind of write
        http.post("/collections/pollution_sources/items", json=source_feature(2, 120.94, 32.1),
                  headers=bearer(department["ecology"])).raise_for_status()
        http.delete(f"/collections/pollution_sources/items/{fid}",
                    headers=bearer(department["ecology"])).raise_for_status()
        observe(http, department["ecology"], stream, 30, 30)
        assert run_file(engine, "city_components", components_csv(tmp_path / "c.csv", codes[:20], lon[:20],
                                                                  lat[:20] + 1e-4, "丢失")).status == "succeeded"
        assert reads(http, stream, fid, as_of=moment) | {"observations": before["observations"],
                                                         "history": before["history"]} == before
        later = reads(http, stream, fid)
        assert later != before and len(later["observations"]) == 60
        engine.dispose()
        archive.flush(url)  # the archive holds the segment past the moment (archive_timeout does it within 60 s)

        pid = int((archive.cluster.pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.05)
        shutil.rmtree(archive.cluster.pgdata)
        archive.cluster.config_file.unlink()  # port and password too: the repository keeps a copy

        listed = twin_here(root, "backups")
        assert listed.exit_code == 0 and "full" in listed.stdout and "restorable from" in listed.stderr, listed.output
        restored = twin("restore", "--to", moment)
        assert restored.returncode == 0, restored.stderr + restored.stdout
        # the same server, its connections replaced, serves the restored database
        assert reads(http, stream, fid) == before
        # which goes on: the next change continues the ids
        made = http.post("/collections/pollution_sources/items", json=source_feature(3, 120.95, 32.1),
                         headers=bearer(department["ecology"]))
        assert made.status_code == 201, made.text
        feed = http.get("/changes", params={"after": before["changes"][-1]["id"]}).json()["changes"]
    assert [c["fid"] for c in feed] == [made.json()["id"]] and feed[0]["id"] > before["changes"][-1]["id"]


def test_refusals_name_what_is_wrong(site):
    root, _ = site
    result = twin_here(root, "restore", "--to", "2001-01-01T00:00:00+08:00")
    assert result.exit_code == 1 and "outside the restorable window" in " ".join(result.stderr.split())
    archive = Archive(Settings(data_dir=root / "var"))
    with pytest.raises(ArchiveError, match="outside the restorable window"):
        archive.restore(datetime(2999, 1, 1, tzinfo=UTC))
    with pytest.raises(ArchiveError, match="holds a database; pass --force"):
        archive.restore(datetime.now(UTC))
    for text in ("2026-12-06 10:15:00", "yesterday"):
        with pytest.raises(ArchiveError, match="with its UTC offset"):
            parse_moment(text)
