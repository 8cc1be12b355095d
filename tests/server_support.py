"""A private server whose log the test reads (the real app under uvicorn, stderr kept in a file), and a Redis
of its own for the shared tile cache."""

import os
import shutil
import socket
import subprocess
import time
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


def _pings(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


@contextmanager
def logged_server(database_url: str, data_dir: Path, log: Path, access_log: bool = False, **settings: str):
    """The base URL of a server on `database_url`, its stderr written to `log`, extra TWIN_ settings applied."""
    port = free_port()
    env = os.environ | {"TWIN_DATABASE_URL": database_url, "TWIN_DATA_DIR": str(data_dir)}
    env |= {f"TWIN_{k.upper()}": str(v) for k, v in settings.items()}
    argv = uvicorn_argv("127.0.0.1", port, access_log=access_log)
    with open(log, "wb") as sink:
        process = subprocess.Popen(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
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
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
