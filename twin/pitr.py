"""Continuous archiving and point-in-time recovery of the managed cluster, by pgBackRest.

The managed cluster starts with archive_mode on: PostgreSQL hands every finished WAL segment (at least one
every `archive_timeout_s`) to `pgbackrest archive-push`, which stores it compressed in the repository
(`backup_repo`, default `data_dir/backups`). `twin db backup` (no file) takes a base backup into the same
repository: full when the newest full backup is older than `backup_full_every_days`, else incremental;
pgBackRest then expires what `backup_retention_full` no longer covers. A restore to a moment copies the
newest base backup that ended before it and replays the archived WAL up to that moment, then promotes: the
database opens on a new timeline, and the old one stays in the archive.

pgBackRest runs as the OS user owning the cluster (postgres, when we are root), with its configuration, lock
and log files in `data_dir/pgbackrest`. Its backups connect over the cluster's socket with the twin role's
password, passed in the environment. The repository keeps a copy of `cluster.json` (port and password; the
repository holds the whole database anyway), so a data directory lost whole can be restored from it.
"""

import json
import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from twin.cluster import DB_NAME, DB_USER, Cluster, ClusterError, Status
from twin.settings import Settings

STANZA = "twin"
INSTALL_HINT = "apt-get install -y pgbackrest"


class ArchiveError(ClusterError):
    """Archiving, a base backup or a restore did not happen; the message says why and what to do."""


@dataclass
class BaseBackup:
    label: str
    type: str
    started: datetime
    stopped: datetime
    database_bytes: int
    repository_bytes: int
    wal_start: str
    wal_stop: str


@dataclass
class Window:
    """The moments a restore can reach: from the end of the oldest base backup to the last archived WAL."""
    backups: list[BaseBackup]
    earliest: datetime | None
    latest: datetime | None
    repository_bytes: int


def _moment(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def parse_moment(text: str) -> datetime:
    """'2026-12-06 10:15:00+08' (ISO 8601, with its UTC offset) as an aware datetime."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ArchiveError(f"{text[:60]!r} is not a moment with its UTC offset, e.g. '2026-12-06 10:15:00+08'")
    return moment


class Archive:
    """The pgBackRest stanza of one managed cluster."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.data_dir = Path(settings.data_dir).resolve()
        self.repository = Path(settings.backup_repo or self.data_dir / "backups").resolve()
        self.home = self.data_dir / "pgbackrest"
        self.config = self.home / "pgbackrest.conf"
        self.cluster = Cluster(self.data_dir, self.server_settings())

    def server_settings(self) -> dict[str, str]:
        """What the managed server starts with: every WAL segment archived, one at least every archive_timeout_s."""
        push = f"{self._binary()} --config={self.config} --stanza={STANZA} archive-push %p"
        return {"archive_mode": "on", "archive_command": push, "archive_timeout": str(self.settings.archive_timeout_s)}

    # -- running pgBackRest -------------------------------------------------------
    @staticmethod
    def _binary() -> str:
        """pgBackRest, by its full path when installed (PostgreSQL's archiver runs with a narrower PATH)."""
        return shutil.which("pgbackrest") or "pgbackrest"

    @staticmethod
    def _check_installed() -> None:
        if not shutil.which("pgbackrest"):
            raise ArchiveError(f"pgbackrest not found. Install it: {INSTALL_HINT}")

    def _owned_dir(self, path: Path, mode: int = 0o750) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def _write_config(self) -> None:
        """pgBackRest's configuration, written anew before each command: the cluster's port may have moved."""
        self._recover_config()
        port = json.loads(self.cluster.config_file.read_text())["port"]
        for path in (self.home, self.home / "log", self.home / "lock", self.repository):
            self._owned_dir(path)
        self.config.write_text(f"""[global]
repo1-path={self.repository}
repo1-retention-full={self.settings.backup_retention_full}
compress-type=lz4
start-fast=y
log-path={self.home / "log"}
lock-path={self.home / "lock"}
log-level-console=off
log-level-stderr=warn
log-level-file=info

[{STANZA}]
pg1-path={self.cluster.pgdata}
pg1-port={port}
pg1-socket-path={self.cluster.pgdata}
pg1-user={DB_USER}
pg1-database={DB_NAME}
""")
        if os.geteuid() == 0:
            shutil.chown(self.config, "postgres", "postgres")

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        self._check_installed()
        self._write_config()
        password = json.loads(self.cluster.config_file.read_text())["password"]
        argv = self.cluster.as_owner([self._binary(), f"--config={self.config}", f"--stanza={STANZA}", *args])
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                env=os.environ | {"PGPASSWORD": password}, cwd="/")
        if result.returncode != 0:
            said = (result.stderr or result.stdout).strip().splitlines()
            raise ArchiveError(f"pgbackrest {args[0]} failed: {said[0] if said else f'exit {result.returncode}'} "
                               f"(log: {self.home / 'log'})")
        return result

    # -- archiving and base backups --------------------------------------------------
    def up(self) -> Status:
        """Start the managed cluster (initialising it the first time) and create the stanza (harmless when it
        exists): the archiver's pushes succeed from the start. (After three failed pushes PostgreSQL waits a
        minute before trying again, and a base backup waits for them.)"""
        self._check_installed()  # before the server starts with an archive_command that cannot run
        if not self.cluster.initialized:
            self.cluster.init()
        self._write_config()
        status = self.cluster.up()
        self._run("stanza-create")
        return status

    def ensure(self) -> BaseBackup | None:
        """Keep cluster.json with the repository, and take the first base backup when the repository has none
        (returned)."""
        with psycopg.connect(self.cluster.url(), connect_timeout=10) as conn:
            if conn.execute("SHOW archive_mode").fetchone()[0] != "on":
                raise ArchiveError("The managed cluster was started without WAL archiving; restart it: "
                                   "twin db down && twin db up")
        kept = self.repository / "cluster.json"
        shutil.copyfile(self.cluster.config_file, kept)
        kept.chmod(0o600)
        if not self.window().backups:
            return self.backup()
        return None

    def backup(self) -> BaseBackup:
        """A base backup now: full when the newest full one is older than backup_full_every_days, else
        incremental. Archived WAL and backups past the retention are expired by pgBackRest."""
        backups = self.window().backups
        fulls = [b.stopped for b in backups if b.type == "full"]
        due = not fulls or datetime.now(UTC) - max(fulls) > timedelta(days=self.settings.backup_full_every_days)
        self._run("backup", f"--type={'full' if due else 'incr'}")
        return self.window().backups[-1]

    def window(self) -> Window:
        result = self._run("info", "--output=json")
        stanzas = json.loads(result.stdout or "[]")
        info = stanzas[0] if stanzas else {}
        backups = [BaseBackup(b["label"], b["type"], _moment(b["timestamp"]["start"]), _moment(b["timestamp"]["stop"]),
                              b["info"]["size"], b["info"]["repository"]["delta"], b["archive"]["start"],
                              b["archive"]["stop"]) for b in info.get("backup", []) if not b.get("error")]
        pushed = [p.stat().st_mtime for p in (self.repository / "archive" / STANZA).glob("*/*/*")
                  if p.is_file()] if backups else []
        # pgBackRest's stop time is in whole seconds: the backup is consistent from the next one on
        earliest = backups[0].stopped + timedelta(seconds=1) if backups else None
        # rounded up: a moment at or past it follows every transaction archived
        latest = max(_moment(math.ceil(max(pushed))), earliest) if pushed else earliest
        return Window(backups, earliest, latest, _size(self.repository))

    def flush(self, url: str, timeout_s: float = 60) -> None:
        """Close the current WAL segment and wait until the archive holds it: everything committed so far is
        in the repository."""
        with psycopg.connect(url, autocommit=True) as conn:
            segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
            deadline = time.monotonic() + timeout_s
            while True:
                archived, failed = conn.execute("SELECT last_archived_wal, last_failed_wal "
                                                "FROM pg_stat_archiver").fetchone()
                if archived and archived[8:] >= segment[8:]:
                    return
                if time.monotonic() > deadline:
                    raise ArchiveError(f"WAL segment {segment} was not archived within {timeout_s:.0f} s "
                                       f"(last failed: {failed}); see {self.cluster.pgdata / 'server.log'}")
                time.sleep(0.1)

    # -- point-in-time recovery ------------------------------------------------------
    def restore(self, target: datetime, force: bool = False, timeout_s: float = 3600) -> datetime | None:
        """Bring the managed cluster back to `target` (aware), replacing its data directory; returns the moment
        of the last transaction replayed (None when the base backup itself was the moment). Refuses a cluster
        that holds data unless `force`; forced, what it committed is archived first, so the timeline it leaves
        stays in the archive."""
        if target.tzinfo is None:
            raise ArchiveError("Give the moment with its UTC offset, e.g. '2026-12-06 10:15:00+08'")
        target = target.astimezone(UTC)
        window = self.window()
        if not window.backups:
            raise ArchiveError(f"No base backup in {self.repository}: nothing to restore from")
        if target < window.earliest or target > datetime.now(UTC):
            raise ArchiveError(f"{target.isoformat()} is outside the restorable window: "
                               f"{window.earliest.isoformat()} to now (see: twin db backups)")
        status = self.cluster.status()
        holds_data = self.cluster.pgdata.exists() and any(self.cluster.pgdata.iterdir())
        if holds_data and not force:
            raise ArchiveError(f"The managed cluster in {self.cluster.pgdata} holds a database; pass --force to "
                               "replace it with the restored one (its WAL is archived first)")
        if status.running:
            self.flush(self.cluster.url())
            self.cluster.down()
        self._owned_dir(self.cluster.pgdata, 0o700)
        # past the last archived segment every archived transaction precedes the target: replay them all
        # (PostgreSQL refuses a time target it never reaches)
        stamp = target.strftime("%Y-%m-%d %H:%M:%S.%f+00")
        aim = (["--type=default"] if target >= window.latest else
               ["--type=time", f"--target={stamp}", "--target-action=promote"])
        self._run("restore", *aim, *(["--delta"] if holds_data else []))
        # the server's lock files were copied with the backup (its socket lives in the data directory)
        for stale in [self.cluster.pgdata / "postmaster.pid", *self.cluster.pgdata.glob(".s.PGSQL.*.lock")]:
            stale.unlink(missing_ok=True)
        try:
            self.cluster.up()
        except (ClusterError, psycopg.OperationalError) as e:
            raise ArchiveError(f"The restored cluster did not start: {self._last_fatal()}") from e
        return self._promoted(timeout_s)

    def _recover_config(self) -> None:
        """cluster.json from the repository when the data directory lost it too."""
        kept = self.repository / "cluster.json"
        if not self.cluster.config_file.exists():
            if not kept.exists():
                raise ArchiveError(f"Neither {self.cluster.config_file} nor {kept} exists: "
                                   "this repository was not made by twin db up")
            self.data_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            shutil.copyfile(kept, self.cluster.config_file)
            self.cluster.config_file.chmod(0o600)

    def _promoted(self, timeout_s: float) -> datetime:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.cluster.status().running:
                raise ArchiveError(f"Recovery stopped: {self._last_fatal()}")
            try:
                with psycopg.connect(self.cluster.url(), connect_timeout=5) as conn:
                    recovering, replayed = conn.execute("SELECT pg_is_in_recovery(), "
                                                        "pg_last_xact_replay_timestamp()").fetchone()
                if not recovering:
                    return replayed
            except psycopg.OperationalError:  # still starting up
                pass
            time.sleep(0.2)
        raise ArchiveError(f"Recovery did not finish within {timeout_s:.0f} s; it goes on in the background "
                           f"(see {self.cluster.pgdata / 'server.log'})")

    def _last_fatal(self) -> str:
        log = self.cluster.pgdata / "server.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        fatal = [line for line in lines if "FATAL" in line or "PANIC" in line]
        return (fatal or lines or ["no server log"])[-1].strip()


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0
