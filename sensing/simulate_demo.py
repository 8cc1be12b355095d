"""`twin demo`'s live part: the server and, once it answers, the simulator, both children of the demo process.

SIGTERM or SIGINT to the demo stops the simulator, then the server, each by its PID (SIGTERM, then SIGKILL
after a grace period), and waits for them, so the demo's ports are free when it exits (status 0). If the server
ends by itself, the simulator is stopped too and the demo exits with the server's status.
"""

import logging
import os
import signal
import subprocess
import time

import httpx

log = logging.getLogger("sensing.simulate")
GRACE_S = 20
POLL_S = 0.5


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.TransportError:
        return False


def _stop(child: subprocess.Popen | None) -> None:
    if child is None or child.poll() is not None:
        return
    os.kill(child.pid, signal.SIGTERM)
    try:
        child.wait(GRACE_S)
    except subprocess.TimeoutExpired:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()


def serve_with_simulator(server_argv: list[str], simulator_argv: list[str], ready_url: str) -> int:
    """Run the server, start the simulator once `ready_url` answers; returns the server's exit status."""
    stopping = []
    previous = {signum: signal.signal(signum, lambda signum, frame: stopping.append(signum))
                for signum in (signal.SIGTERM, signal.SIGINT)}
    server = subprocess.Popen(server_argv, stdin=subprocess.DEVNULL)
    simulator = None
    try:
        while not stopping and server.poll() is None:
            if simulator is None and _answers(ready_url):
                simulator = subprocess.Popen(simulator_argv, stdin=subprocess.DEVNULL)
                log.info("simulator started (PID %d)", simulator.pid)
            time.sleep(POLL_S)
    finally:
        _stop(simulator)
        _stop(server)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    # a server stopped on our signal exits by it (uvicorn re-raises it): that is a clean stop
    return 0 if stopping else server.returncode
