"""A private server whose log the test reads (the real app under uvicorn as `twin serve` runs it, or under
hypercorn; stderr kept in a file), and a Redis of its own for the shared tile cache."""

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis

from tests.tile_support import wait_for
from twin.cli import uvicorn_argv

REPO = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int, directory: Path) -> subprocess.Popen:
    """A redis-server on a loopback port, answering pings (10 s at most), keeping nothing on disk."""
    process = subprocess.Popen([REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                "--appendonly", "no", "--dir", str(directory)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with redis.Redis(port=port) as client:
        if not wait_for(lambda: _pings(client), 10):
            process.kill()
            raise RuntimeError("redis-server did not start")
    return process


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def hypercorn_argv(host: str, port: int, access_log: bool = False) -> list[str]:
    """The same app under hypercorn: nothing in it is uvicorn's."""
    return [sys.executable, "-m", "hypercorn", "twin.app:create_app()", "--bind", f"{host}:{port}",
            "--worker-class", "uvloop", *(["--access-logfile", "-"] if access_log else [])]


def _pings(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


@contextmanager
def logged_server(database_url: str, data_dir: Path, log: Path, access_log: bool = False, workers: int = 1,
                  environment: dict[str, str] | None = None, argv: Callable[..., list[str]] | None = None,
                  **settings: str):
    """The base URL of a server on `database_url`, its stderr written to `log`, extra TWIN_ settings applied
    (and any other `environment`), in `workers` worker processes; run as `twin serve` runs it, or by
    `argv(host, port, access_log=)` (hypercorn_argv)."""
    port = free_port()
    env = os.environ | {"TWIN_DATABASE_URL": database_url, "TWIN_DATA_DIR": str(data_dir)} | (environment or {})
    env |= {f"TWIN_{k.upper()}": str(v) for k, v in settings.items()}
    command = (argv("127.0.0.1", port, access_log=access_log) if argv
               else uvicorn_argv("127.0.0.1", port, workers=workers, access_log=access_log))
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield base
    finally:
        stop(process)
