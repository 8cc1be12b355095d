"""The managed local PostGIS: lifecycle, stale state and clear errors."""

import os
import shutil
import signal
import socket
import subprocess
import sys

import psycopg
import pytest

from tests.conftest import REPO, reachable_tmpdir
from twin.cluster import Cluster, ClusterError
from twin.db import DatabaseError, check_database


@pytest.fixture
def cluster():
    path = reachable_tmpdir("twin-cluster-")
    c = Cluster(path / "var")
    yield c
    c.destroy()
    shutil.rmtree(path, ignore_errors=True)


def _server_pid(c: Cluster) -> int:
    return int((c.pgdata / "postmaster.pid").read_text().splitlines()[0])


def test_up_twice_is_harmless_and_down_stops(cluster):
    first = cluster.up()
    pid = _server_pid(cluster)
    second = cluster.up()
    assert first.running and second.running and first.port == second.port
    assert _server_pid(cluster) == pid  # the same server, not a second one
    assert check_database(cluster.url()) == "not installed yet (run: twin db migrate)"
    with psycopg.connect(cluster.url()) as conn:
        assert conn.execute("SELECT inet_server_addr()::text").fetchone()[0] == "127.0.0.1/32"
        assert conn.execute("SHOW unix_socket_directories").fetchone()[0] == str(cluster.pgdata)
    cluster.down()
    assert not cluster.status().running
    with pytest.raises(DatabaseError, match="Cannot reach the database"):
        check_database(cluster.url())


def test_restarts_after_a_crash_with_a_stale_pid_file(cluster):
    cluster.up()
    os.kill(_server_pid(cluster), signal.SIGKILL)
    pidfile = cluster.pgdata / "postmaster.pid"
    for _ in range(50):  # wait for the killed postmaster to disappear; its pid file stays behind
        if cluster._pg_ctl("status", check=False).returncode != 0:
            break
        import time
        time.sleep(0.1)
    assert pidfile.exists()
    status = cluster.up()
    assert status.running
    with psycopg.connect(cluster.url()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_moves_to_a_free_port_when_its_port_is_taken(cluster):
    cluster.up()
    cluster.down()
    recorded = cluster.status().port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", recorded))
        squatter.listen()
        status = cluster.up()
    assert status.running and status.port != recorded
    assert f":{status.port}/" in cluster.url()


def test_data_dir_that_cannot_be_written_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ClusterError, match="not writable.*TWIN_DATA_DIR"):
        Cluster(blocker / "var").up()


def test_no_cluster_yet_says_how_to_start_one(tmp_path):
    with pytest.raises(ClusterError, match="twin db up"):
        Cluster(tmp_path / "nothing").url()


def test_unreachable_url_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DatabaseError, match=f"Cannot reach the database at 127.0.0.1:{port}"):
        check_database(f"postgresql://x:y@127.0.0.1:{port}/nowhere")


def test_cli_db_lifecycle(cluster):
    env = {**os.environ, "TWIN_DATA_DIR": str(cluster.data_dir)}
    env.pop("TWIN_DATABASE_URL", None)

    def twin(*args):
        return subprocess.run([sys.executable, "-m", "twin.cli", *args], env=env, cwd=REPO,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)

    assert twin("db", "status").returncode == 3  # not initialised: says so, non-zero
    up = twin("db", "up")
    assert up.returncode == 0, up.stderr
    assert "database migrated to head" in up.stdout
    url = twin("db", "url").stdout.strip()
    assert url == cluster.url()
    status = twin("db", "status")
    assert "running" in status.stdout and "PostGIS 3" in status.stdout
    assert twin("db", "down").returncode == 0
    assert not cluster.status().running
