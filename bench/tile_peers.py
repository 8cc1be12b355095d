"""The parts of the tile bench that run beside it: the bench database, our server, tipg, nginx and wrk.

Everything listens on loopback ports of its own and is stopped by the process id it was started with.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from twin.cli import uvicorn_argv

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(tempfile.gettempdir()) / "twin-bench-tiles"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_database(components: int, fresh: bool) -> tuple[str, Path]:
    """(URL, data dir) of a throwaway cluster with the district and `components` city components,
    loaded through the ETL; kept between runs (loading is skipped when the same data is in)."""
    from twin.cluster import Cluster

    cluster = Cluster(BENCH_DIR / "db")
    if fresh:
        cluster.destroy()
    BENCH_DIR.mkdir(exist_ok=True)
    BENCH_DIR.chmod(0o755)  # the postgres OS user enters it
    cluster.up()
    url = cluster.url()
    os.environ |= {"TWIN_DATABASE_URL": url, "TWIN_DATA_DIR": str(BENCH_DIR)}
    from etl.bundle import load_bundle
    from twin.db import migrate, sync_engine
    from twin.settings import get_settings

    get_settings.cache_clear()
    sync_engine.cache_clear()
    migrate(url=url)
    started = time.monotonic()
    results = load_bundle(sync_engine(), get_settings(), components=components,
                          progress=lambda stage: print(f"  {stage}", flush=True))
    failed = [(layer, r.error) for _, layer, r in results if r.status != "succeeded"]
    if failed:
        raise SystemExit(f"loading the bench database failed: {failed}")
    print(f"bench database ready in {time.monotonic() - started:.0f} s: {url.split('@')[-1]}", flush=True)
    return url, BENCH_DIR


@contextmanager
def process(argv: list[str], ready_url: str | None = None, env: dict | None = None, log: Path | None = None,
            timeout: float = 30):
    """A process in a session of its own (stopping it stops what it started, e.g. uvicorn's workers), until it
    answers `ready_url` (`timeout` s at most), if given; stopped at the end."""
    sink = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while ready_url:
            try:
                if httpx.get(ready_url, timeout=2).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start" + (f": {Path(log).read_text()[-2000:]}" if log else ""))
            time.sleep(0.2)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log:
            sink.close()


KEEP_ALIVE = ["--timeout-keep-alive", "120"]  # connections kept open between the bench's slower requests


def uvicorn(python: str, app: list[str], port: int) -> list[str]:
    """tipg as its docs run it: one uvicorn worker with httptools and uvloop, no access log."""
    return [python, "-m", "uvicorn", *app, "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            "--http", "httptools", "--loop", "uvloop", *KEEP_ALIVE]


@contextmanager
def ours(url: str, data_dir: Path, log: Path):
    port = free_port()
    env = os.environ | {"TWIN_DATABASE_URL": url, "TWIN_DATA_DIR": str(data_dir)}
    # as `twin serve` runs it: one worker, httptools and uvloop (a longer keep-alive: the last value counts)
    with process(uvicorn_argv("127.0.0.1", port) + KEEP_ALIVE, f"http://127.0.0.1:{port}/health", env, log):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def tipg(python: str, url: str, log: Path):
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": url, "TIPG_DB_SCHEMAS": '["layers"]'}
    with process(uvicorn(python, ["tipg.main:app"], port), f"http://127.0.0.1:{port}/collections", env, log):
        yield f"http://127.0.0.1:{port}"


NGINX_CONF = """worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location / {{ default_type application/vnd.mapbox-vector-tile; }}
  }}
}}
"""


@contextmanager
def nginx(root: Path, work: Path):
    """nginx (one worker, like our one uvicorn worker) serving the files under `root` at their paths."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=work, port=port, root=root))
    probe = next(p for p in root.rglob("*") if p.is_file()).relative_to(root)
    with process([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-e", str(work / "error.log")],
                 f"http://127.0.0.1:{port}/{probe}"):
        yield f"http://127.0.0.1:{port}"


WRK_SCRIPT = """
local paths = {{}}
for line in io.lines("{paths}") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i + 1
  local path = paths[(i - 1) % #paths + 1]
  {fresh}
  return wrk.format("GET", path)
end
"""


def wrk(base: str, paths: list[str], work: Path, seconds: int, connections: int, fresh: str | None = None) -> dict:
    """Requests per second and latency percentiles of wrk (one thread) cycling through `paths`; with `fresh`
    (a query parameter name), every pass over the paths adds a new value of it, so no request repeats."""
    listed = work / f"paths-{base.rsplit(':', 1)[-1]}.txt"
    listed.write_text("\n".join(paths) + "\n")
    bust = (f'path = path .. (path:find("?", 1, true) and "&" or "?") .. "{fresh}=" .. math.floor((i - 1) / #paths)'
            if fresh else "")
    script = work / f"wrk-{base.rsplit(':', 1)[-1]}.lua"
    script.write_text(WRK_SCRIPT.format(paths=listed, fresh=bust))
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), base],
                         capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = {p: _ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1)) for p in ("50", "99")}
    return {"rate": rate, "p50": latency["50"], "p99": latency["99"], "errors": int(errors.group(1)) if errors else 0}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]
