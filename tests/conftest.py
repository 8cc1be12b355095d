"""Test fixtures: a throwaway PostGIS cluster, the migrated schema, a small district loaded
through the ETL, and the real server over HTTP. Set TWIN_TEST_DATABASE_URL to test against
an existing PostGIS instead (it must be disposable: tests write to it)."""

import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from twin.cluster import Cluster

REPO = Path(__file__).resolve().parent.parent
TEST_COMPONENTS = 3000


def reachable_tmpdir(prefix: str) -> Path:
    """A temp dir the postgres OS user can enter (pytest's own tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def data_dir():
    path = reachable_tmpdir("twin-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(data_dir):
    external = os.environ.get("TWIN_TEST_DATABASE_URL")
    cluster = None if external else Cluster(data_dir / "db")
    url = external or (cluster.up() and cluster.url())
    os.environ["TWIN_DATABASE_URL"] = url
    os.environ["TWIN_DATA_DIR"] = str(data_dir)
    os.environ["TWIN_HJ212_PORT"] = "0"  # servers the tests start listen for HJ 212 only where a test asks
    from twin.db import migrate, sync_engine
    from twin.settings import get_settings

    get_settings.cache_clear()
    sync_engine.cache_clear()
    migrate(url=url)
    yield url
    sync_engine().dispose()
    if cluster:
        cluster.destroy()


@pytest.fixture(scope="session")
def engine(database_url):
    from twin.db import sync_engine

    return sync_engine()


@pytest.fixture(scope="session")
def loaded(engine):
    """The bundled district (real data + a small generated sample) loaded through the ETL."""
    from etl.bundle import load_bundle
    from twin.settings import get_settings

    results = load_bundle(engine, get_settings(), components=TEST_COMPONENTS)
    failed = [(name, layer, r.error) for name, layer, r in results if r.status != "succeeded"]
    assert not failed, failed
    return results


@pytest.fixture(scope="session")
def server(loaded, database_url, data_dir):
    """The real app under uvicorn on a free loopback port."""
    from tests.server_support import logged_server

    # webhooks are delivered by test_webhooks' own server alone: the session's would take its subscriptions
    with logged_server(database_url, data_dir, data_dir / "server.log", webhook_workers=0) as base:
        yield base


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client
