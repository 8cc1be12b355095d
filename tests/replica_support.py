"""A hot standby of a managed test cluster: its base backup (`pg_basebackup -R` writes the replication
settings), started as a managed cluster of its own on another loopback port, as the postgres OS user."""

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import reachable_tmpdir
from tests.etl_support import engine_for
from tests.history_support import ECOLOGY, LAYER
from twin.auth import create_key
from twin.cluster import Cluster, find_postgis_bindir, free_port
from twin.db import migrate


def standby_of(primary: Cluster, data_dir: Path) -> Cluster:
    replica = Cluster(data_dir)
    replica.pgdata.mkdir(mode=0o700, parents=True)
    shutil.chown(replica.pgdata, "postgres", "postgres")
    replica._run([str(find_postgis_bindir() / "pg_basebackup"), "-D", str(replica.pgdata), "-R", "-X", "stream",
                  "-c", "fast", "-d", primary.url()])
    replica._save_config(json.loads(primary.config_file.read_text()) | {"port": free_port()})
    replica.up()
    return replica


@contextmanager
def primary_and_standby(prefix: str):
    """(work dir, primary, its hot standby, a key of the department owning LAYER): a migrated primary and its
    streaming replica, destroyed afterwards."""
    root = reachable_tmpdir(prefix)
    primary, replica = Cluster(root / "primary"), None
    try:
        primary.up()
        migrate(url=primary.url())
        engine = engine_for(primary.url())
        with engine.begin() as conn:
            key = create_key(conn, ECOLOGY, [LAYER])
        engine.dispose()
        replica = standby_of(primary, root / "replica")
        yield root, primary, replica, key
    finally:
        for cluster in (replica, primary):
            if cluster:
                cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)
