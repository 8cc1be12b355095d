"""The managed local PostGIS: a private PostgreSQL cluster in the data directory.

It listens on 127.0.0.1 and on a socket inside its own directory only, on a free
port recorded in `cluster.json`, with a generated password. PostgreSQL refuses to
run as root, so as root the server runs as the `postgres` OS user.
"""

import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "twin"
DB_USER = "twin"
INSTALL_HINT = "apt-get install -y postgresql postgresql-15-postgis-3"


class ClusterError(RuntimeError):
    """A problem a person can act on; the message says what to do."""


def _pg_bindirs() -> list[Path]:
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    return sorted(found, key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0), reverse=True)


def find_postgis_bindir() -> Path:
    """The newest PostgreSQL whose share directory has the PostGIS extension."""
    bindirs = _pg_bindirs()
    if not bindirs:
        raise ClusterError(f"PostgreSQL server binaries not found. Install them: {INSTALL_HINT}")
    for bindir in bindirs:
        version = bindir.parent.name
        if list(Path(f"/usr/share/postgresql/{version}/extension").glob("postgis.control")):
            return bindir
    versions = ", ".join(b.parent.name for b in bindirs)
    raise ClusterError(
        f"PostgreSQL {versions} found but without PostGIS. Install it: "
        f"apt-get install -y postgresql-{bindirs[0].parent.name}-postgis-3"
    )


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Status:
    initialized: bool
    running: bool
    port: int | None
    pgdata: Path


class Cluster:
    def __init__(self, data_dir: Path, server_settings: dict[str, str] | None = None):
        """`server_settings` are given to the server at every start (continuous archiving: twin.pitr)."""
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "pg"
        self.config_file = self.data_dir / "cluster.json"
        self.server_settings = server_settings or {}

    # -- state ------------------------------------------------------------
    def _config(self) -> dict:
        return json.loads(self.config_file.read_text()) if self.config_file.exists() else {}

    def _save_config(self, config: dict) -> None:
        self.config_file.write_text(json.dumps(config, indent=2))
        self.config_file.chmod(0o600)

    @property
    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists() and self.config_file.exists()

    def url(self) -> str:
        config = self._config()
        if not config:
            raise ClusterError(f"No managed cluster in {self.data_dir}. Start one: twin db up")
        return f"postgresql://{DB_USER}:{config['password']}@127.0.0.1:{config['port']}/{DB_NAME}"

    def status(self) -> Status:
        running = self.initialized and self._pg_ctl("status", check=False).returncode == 0
        return Status(self.initialized, running, self._config().get("port"), self.pgdata)

    # -- running commands as the right OS user ------------------------------
    def as_owner(self, argv: list[str]) -> list[str]:
        """`argv` run as the OS user owning the cluster's files (postgres, when we are root)."""
        if os.geteuid() != 0:
            return argv
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterError(f"Running as root needs the 'postgres' OS user. Install PostgreSQL: {INSTALL_HINT}")
        return ["runuser", "-u", "postgres", "--", *argv]

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(self.as_owner(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise ClusterError(f"{Path(argv[0]).name} failed: {(result.stderr or result.stdout).strip()}")
        return result

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self._run([str(find_postgis_bindir() / "pg_ctl"), "-D", str(self.pgdata), *args], check=check)

    # -- lifecycle ----------------------------------------------------------
    def _prepare_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            probe = self.data_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise ClusterError(f"Data directory {self.data_dir} is not writable ({e.strerror}). "
                               "Set TWIN_DATA_DIR to a writable directory.") from e
        if os.geteuid() == 0:
            self._check_reachable_by_postgres()

    def _check_reachable_by_postgres(self) -> None:
        for parent in [self.data_dir, *self.data_dir.parents]:
            if not os.stat(parent).st_mode & 0o001:
                raise ClusterError(f"The postgres OS user cannot enter {parent}; the cluster in {self.data_dir} "
                                   f"needs it: chmod o+x {parent}, or set TWIN_DATA_DIR elsewhere.")

    def init(self) -> None:
        bindir = find_postgis_bindir()
        self._prepare_dir()
        password = secrets.token_urlsafe(18)
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise ClusterError(f"{self.pgdata} exists but holds no cluster of ours; move it away or set TWIN_DATA_DIR.")
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.data_dir / ".pw"
        pwfile.write_text(password)
        if os.geteuid() == 0:
            shutil.chown(self.pgdata, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        try:
            self._run([str(bindir / "initdb"), "-D", str(self.pgdata), "-U", DB_USER, "--pwfile", str(pwfile),
                       "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"])
        finally:
            pwfile.unlink(missing_ok=True)
        self._save_config({"port": free_port(), "password": password, "bindir": str(bindir)})

    def _pick_port(self, config: dict) -> int:
        if port_is_free(config["port"]):
            return config["port"]
        config["port"] = free_port()
        self._save_config(config)
        return config["port"]

    def _remove_stale_pid(self) -> None:
        pidfile = self.pgdata / "postmaster.pid"
        if pidfile.exists() and self._pg_ctl("status", check=False).returncode != 0:
            pidfile.unlink()

    def up(self) -> Status:
        """Initialise if needed, then start; harmless when already running."""
        if not self.initialized:
            self.init()
        status = self.status()
        if status.running:
            return status
        self._remove_stale_pid()
        port = self._pick_port(self._config())
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{self.pgdata}'"
        options += "".join(f' -c "{name}={value}"' for name, value in self.server_settings.items())
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.pgdata / "server.log"), "-o", options)
        self._ensure_database()
        return self.status()

    def _ensure_database(self) -> None:
        import psycopg

        admin_url = self.url().rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')

    def down(self) -> None:
        if self.status().running:
            self._pg_ctl("stop", "-m", "fast", "-w")

    def destroy(self) -> None:
        self.down()
        shutil.rmtree(self.data_dir, ignore_errors=True)
