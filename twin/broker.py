"""The MQTT broker: Debian's mosquitto run by the project in `$TWIN_DATA_DIR/broker`, or TWIN_MQTT_URL's.

The managed broker listens on loopback (TWIN_MQTT_HOST) on TWIN_MQTT_PORT, or on a free port picked once and
kept in `broker.json`. Nobody connects anonymously: a department key's prefix is its username and the whole
key its password; the server's own ingest and publisher log in as `twin-service` with a generated password
(in `broker.json`, 0600). The password and ACL files are written from the database (`twin.broker_credential`,
`twin.broker_acl()`, migration 0015) by `refresh`, which the key hooks of twin.auth, `twin broker up` and a
server that manages the broker call, and the running broker rereads them on SIGHUP: a revoked key is cut off
at once. As root, mosquitto drops to the `mosquitto` OS user, which owns the broker's directory. It is stopped
by the PID in its pid file, after checking that the process is the mosquitto of this directory.
"""

import base64
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from sqlalchemy import text
from sqlalchemy.engine import Connection

from twin.cluster import free_port, port_is_free
from twin.settings import Settings, get_settings

MOSQUITTO = "/usr/sbin/mosquitto"
INSTALL_HINT = "apt-get install -y mosquitto"
SERVICE_USER = "twin-service"  # not a key prefix (prefixes are alphanumeric)
OS_USER = "mosquitto"
ITERATIONS = 101  # mosquitto_passwd's own for $7$ (PBKDF2-SHA512)
# The broker's limits (docs/mqtt.md): what one client may send or hold, so that a flood from one cannot
# starve the others, and room for the ingest's window and its queue while it restarts.
LIMITS = {
    "max_packet_size": 16384,  # bytes of one MQTT packet (advertised to v5 clients); a bigger one: disconnected
    "max_connections": 2000,
    "max_inflight_messages": 5000,  # QoS 1 messages out to one client awaiting its PUBACK (the ingest's window)
    "max_queued_messages": 200000,  # QoS 1 messages queued for one client beyond those in flight
    "max_queued_bytes": 64 << 20,
    "max_keepalive": 300,
    "persistent_client_expiration": "7d",  # sessions of v3 clients, which carry no expiry of their own
    "autosave_interval": 10,  # seconds between saves of queued messages (and at every clean stop)
}


class BrokerError(RuntimeError):
    """A problem a person can act on; the message says what to do."""


def password_hash(password: str, salt: bytes | None = None) -> str:
    """mosquitto's password_file hash of `password` ($7$: PBKDF2-SHA512, 12-byte salt)."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


@dataclass
class Status:
    initialized: bool
    running: bool
    pid: int | None
    port: int | None
    directory: Path


class Broker:
    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0):
        self.directory = (Path(data_dir) / "broker").resolve()
        self.host, self.wanted_port = host, port
        self.config_file = self.directory / "broker.json"
        self.conf = self.directory / "mosquitto.conf"
        self.pid_file = self.directory / "mosquitto.pid"
        self.log = self.directory / "mosquitto.log"

    @classmethod
    def of(cls, settings: Settings) -> "Broker":
        return cls(settings.data_dir, settings.mqtt_host, settings.mqtt_port)

    # -- state ------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return self.config_file.exists()

    def config(self) -> dict:
        if not self.initialized:
            raise BrokerError(f"No managed broker in {self.directory}. Start one: twin broker up")
        return json.loads(self.config_file.read_text())

    def _save_config(self, config: dict) -> None:
        self._write(self.config_file, json.dumps(config, indent=2), own=False)

    def pid(self) -> int | None:
        """The PID of this directory's running mosquitto, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if str(self.conf).encode() in cmdline else None

    def status(self) -> Status:
        pid = self.pid()
        port = json.loads(self.config_file.read_text())["port"] if self.initialized else None
        return Status(self.initialized, pid is not None, pid, port, self.directory)

    def url(self) -> str:
        """Where devices and readers connect (their key is the credential)."""
        return f"mqtt://{self.host}:{self.config()['port']}"

    def service_url(self) -> str:
        config = self.config()
        return f"mqtt://{SERVICE_USER}:{quote(config['service_password'], safe='')}@{self.host}:{config['port']}"

    # -- files --------------------------------------------------------------
    def _write(self, path: Path, content: str, own: bool = True) -> None:
        """Atomically, 0600, owned by mosquitto's OS user when it will read it as that user."""
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(content)
        temporary.chmod(0o600)
        if own and os.geteuid() == 0:
            shutil.chown(temporary, OS_USER, OS_USER)
        temporary.replace(path)

    def _mosquitto_conf(self, port: int) -> str:
        lines = [f"listener {port} {self.host}", "allow_anonymous false", f"password_file {self.directory}/passwords",
                 f"acl_file {self.directory}/acl", "persistence true", f"persistence_location {self.directory}/data/",
                 f"pid_file {self.pid_file}", f"log_dest file {self.log}", "log_type error", "log_type warning",
                 "log_type notice", "connection_messages true", "set_tcp_nodelay true",
                 *(f"{name} {value}" for name, value in LIMITS.items())]
        if os.geteuid() == 0:
            lines.append(f"user {OS_USER}")
        return "\n".join(lines) + "\n"

    def write_credentials(self, conn: Connection) -> None:
        """The password and ACL files as the database (in `conn`'s transaction) says."""
        config = self.config()
        users = [(SERVICE_USER, config["service_hash"])] + [tuple(r) for r in conn.execute(text(
            "SELECT k.prefix, c.password_hash FROM twin.api_key k JOIN twin.broker_credential c ON c.key_id = k.id "
            "WHERE k.revoked_at IS NULL ORDER BY k.prefix"))]
        self._write(self.directory / "passwords", "".join(f"{user}:{hashed}\n" for user, hashed in users))
        # events.mqtt publishes alerts and changes of public layers only under twin/v1/: every key may read them
        acl = ["pattern read twin/v1/#", "", f"user {SERVICE_USER}", "topic readwrite v1.1/#", "topic write twin/v1/#"]
        current = None
        for user, access, topic in conn.execute(text("SELECT username, access, topic FROM twin.broker_acl()")):
            if user != current:
                acl += ["", f"user {user}"]
                current = user
            acl.append(f"topic {access} {topic}")
        self._write(self.directory / "acl", "\n".join(acl) + "\n")

    # -- lifecycle ----------------------------------------------------------
    def init(self) -> None:
        if not Path(MOSQUITTO).exists():
            raise BrokerError(f"{MOSQUITTO} not found. Install it: {INSTALL_HINT}")
        try:
            (self.directory / "data").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BrokerError(f"{self.directory} cannot be made ({e.strerror}); set TWIN_DATA_DIR to a writable "
                              "directory.") from e
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(OS_USER)
            except KeyError:
                raise BrokerError(f"Running as root needs the '{OS_USER}' OS user. Install: {INSTALL_HINT}") from None
            for parent in [self.directory, *self.directory.parents]:
                if not os.stat(parent).st_mode & 0o001:
                    raise BrokerError(f"The {OS_USER} OS user cannot enter {parent}: chmod o+x {parent}, or set "
                                      "TWIN_DATA_DIR elsewhere.")
            for path in (self.directory, self.directory / "data"):  # it writes its pid file, log and queues
                shutil.chown(path, OS_USER, OS_USER)
        password = secrets.token_urlsafe(24)
        self._save_config({"port": self.wanted_port or free_port(), "service_password": password,
                           "service_hash": password_hash(password), "group": f"twin-ingest-{secrets.token_hex(8)}"})

    def up(self, conn: Connection) -> Status:
        """Initialise if needed, write the credentials from the database, start; harmless when running."""
        if not self.initialized:
            self.init()
        config = self.config()
        if self.wanted_port and config["port"] != self.wanted_port:
            config["port"] = self.wanted_port
            self._save_config(config)
        self.write_credentials(conn)
        if self.pid() is not None:
            self.reload()
            return self.status()
        if not port_is_free(config["port"]):
            if self.wanted_port:
                raise BrokerError(f"Port {config['port']} (TWIN_MQTT_PORT) is taken; free it or choose another.")
            config["port"] = free_port()
            self._save_config(config)
        self._write(self.conf, self._mosquitto_conf(config["port"]))
        self.pid_file.unlink(missing_ok=True)
        result = subprocess.run([MOSQUITTO, "-c", str(self.conf), "-d"], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not (self.pid() and self._accepts(config["port"])):
            if result.returncode != 0 or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
                raise BrokerError(f"mosquitto did not start: {(result.stderr or '').strip()} {tail}".strip())
            time.sleep(0.05)
        return self.status()

    def _accepts(self, port: int) -> bool:
        try:
            socket.create_connection((self.host, port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def reload(self) -> bool:
        """SIGHUP: the broker rereads its password and ACL files (and drops clients no longer allowed)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
        return pid is not None

    def down(self, timeout: float = 15) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)  # mosquitto saves its queues on a clean stop
        deadline = time.monotonic() + timeout
        while self.pid() == pid and Path(f"/proc/{pid}").exists():
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)


def managed(settings: Settings | None = None) -> bool:
    """True when the project runs the broker (TWIN_MQTT_URL unset)."""
    return not (settings or get_settings()).mqtt_url


def service_url(settings: Settings) -> str | None:
    """The URL (with the service's credentials) the server's ingest and publisher use; None when no broker is
    configured: TWIN_MQTT_URL unset and no managed broker in the data directory."""
    if settings.mqtt_url:
        return settings.mqtt_url
    broker = Broker.of(settings)
    return broker.service_url() if broker.initialized else None


def ingest_group(settings: Settings) -> str:
    """The shared subscription's group of the ingest processes. mosquitto's acl_file does not check
    subscriptions (only each delivery against the subscriber's read rights), so a reader who joined the group
    would take its share of the stream away from the ingest: the managed broker's group is a secret name in
    broker.json; with TWIN_MQTT_URL, TWIN_MQTT_GROUP (keep it private, or deny $share/ subscriptions there)."""
    if settings.mqtt_url:
        return settings.mqtt_group
    return Broker.of(settings).config()["group"]


def client_url(settings: Settings) -> str:
    """The URL devices and readers use: TWIN_MQTT_URL without its credentials, or the managed broker's."""
    if settings.mqtt_url:
        parts = urlsplit(settings.mqtt_url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 1883}"
    return Broker.of(settings).url()


def endpoint(url: str) -> tuple[str, int, str | None, str | None]:
    """(host, port, username, password) of an mqtt:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise BrokerError(f"not an MQTT URL: {url.split('@')[-1]!r} (mqtt://user:password@host:port)")
    return (parts.hostname, parts.port or 1883, unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None)


def refresh(conn: Connection, settings: Settings | None = None) -> bool:
    """Rewrite the managed broker's password and ACL files from the database as `conn` sees it, and make a
    running broker reread them; True when a running broker was told. Nothing to do without a managed broker."""
    broker = Broker.of(settings or get_settings())
    if not broker.initialized:
        return False
    broker.write_credentials(conn)
    return broker.reload()


def remember_key(conn: Connection, prefix: str, key: str) -> None:
    """At a key's creation (its secret known only now): its broker password hash; then refresh."""
    conn.execute(text("INSERT INTO twin.broker_credential (key_id, password_hash) "
                      "SELECT id, :hash FROM twin.api_key WHERE prefix = :prefix"),
                 {"prefix": prefix, "hash": password_hash(key)})
    refresh(conn)
