"""A hot standby of a managed test cluster: its base backup (`pg_basebackup -R` writes the replication
settings), started as a managed cluster of its own on another loopback port, as the postgres OS user."""

import json
import shutil
from pathlib import Path

from twin.cluster import Cluster, find_postgis_bindir, free_port


def standby_of(primary: Cluster, data_dir: Path) -> Cluster:
    replica = Cluster(data_dir)
    replica.pgdata.mkdir(mode=0o700, parents=True)
    shutil.chown(replica.pgdata, "postgres", "postgres")
    replica._run([str(find_postgis_bindir() / "pg_basebackup"), "-D", str(replica.pgdata), "-R", "-X", "stream",
                  "-c", "fast", "-d", primary.url()])
    replica._save_config(json.loads(primary.config_file.read_text()) | {"port": free_port()})
    replica.up()
    return replica
