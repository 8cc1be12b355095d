"""The server across a frozen database, on a cluster and server of its own.

Every PostgreSQL process is stopped with SIGSTOP for FROZEN_S seconds: the kernel still accepts
connections and acknowledges what is sent, nothing answers. Every request still ends within the
deadline (statement timeout + twin.errors.DEADLINE_MARGIN_S) with 503 JSON and Retry-After, and
after SIGCONT the server serves again by itself. Acknowledged writes are kept.
"""

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.fault_support import (assert_acknowledged_writes_kept, assert_only_503_json_with_retry_after,
                                 assert_recovered, hammering, recovered_at, station_site)
from tests.tile_support import wait_for
from twin.errors import DEADLINE_MARGIN_S

STATEMENT_TIMEOUT_MS = 1000
DEADLINE_S = STATEMENT_TIMEOUT_MS / 1000 + DEADLINE_MARGIN_S
# The deadline plus slack for answering on a loaded machine (two shared cores, other test runs): wide, and still
# short of FROZEN_S less the probes' 1 s start, so a request that waited for the thaw instead of the deadline fails.
BOUND_S = DEADLINE_S + 4.0
FROZEN_S = 14.0
WORKERS = 12  # a request waits out the deadline while frozen: enough threads to ask every endpoint twice
RECOVERY_S = 15.0


def postgres_processes(pgdata: Path) -> list[int]:
    """The postmaster and every process it forked (backends, checkpointer, walwriter …)."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


@pytest.fixture(scope="module")
def site():
    with station_site("twin-freeze-", statement_timeout_ms=STATEMENT_TIMEOUT_MS) as built:
        try:
            yield built
        finally:
            pgdata = built[0].pgdata
            for pid in postgres_processes(pgdata) if (pgdata / "postmaster.pid").exists() else []:
                os.kill(pid, signal.SIGCONT)  # never leave a stopped cluster behind


def _probe(base: str, name: str, make, probed: dict) -> None:
    """One request to an endpoint, made while the database is frozen: (status, seconds) into `probed`."""
    method, path, kwargs = make()
    started = time.monotonic()
    r = httpx.request(method, base + path, timeout=30, **kwargs)
    probed[name] = (r.status_code, time.monotonic() - started)


@pytest.fixture(scope="module")
def freeze(site):
    """Requests from WORKERS threads while every PostgreSQL process is stopped for FROZEN_S seconds."""
    cluster, _, key, base, _ = site
    processes: list[int] = []
    probed: dict[str, tuple[int, float]] = {}
    with hammering(base, key, WORKERS, BOUND_S) as (requests, outcomes):
        try:
            time.sleep(1.5)  # the pools hold idle connections now: the case that used to hang
            processes = postgres_processes(cluster.pgdata)
            for pid in processes:  # the postmaster first: it forks no backend after that
                os.kill(pid, signal.SIGSTOP)
            processes = postgres_processes(cluster.pgdata)
            for pid in processes:
                os.kill(pid, signal.SIGSTOP)
            frozen = time.monotonic()
            time.sleep(1.0)
            probes = [threading.Thread(target=_probe, args=(base, name, make, probed), daemon=True)
                      for name, make in requests.items()]
            for probe in probes:
                probe.start()
            for probe in probes:
                probe.join(timeout=FROZEN_S)
            time.sleep(max(0.0, frozen + FROZEN_S - time.monotonic()))
        finally:
            for pid in processes:
                os.kill(pid, signal.SIGCONT)
        thawed = time.monotonic()
        recovered = wait_for(lambda: recovered_at(outcomes, requests, thawed), seconds=RECOVERY_S + 5)
        time.sleep(1.0)
    return {"outcomes": outcomes, "frozen": frozen, "thawed": thawed, "recovered": recovered,
            "names": list(requests), "processes": len(processes), "probed": probed}


def test_every_request_ends_within_the_deadline(freeze):
    outcomes = freeze["outcomes"]
    assert [o for o in outcomes if o.status is None] == []
    slowest = max(outcomes, key=lambda o: o.seconds)
    assert slowest.seconds <= BOUND_S, slowest
    during = [o for o in outcomes if freeze["frozen"] <= o.started <= freeze["thawed"]]
    print(f"\n{freeze['processes']} postgres processes frozen {FROZEN_S:.0f} s; {len(outcomes)} requests, "
          f"{len(during)} started during the freeze, {sum(o.status == 503 for o in outcomes)} answered 503, "
          f"slowest {slowest.seconds:.2f} s ({slowest.endpoint}, {slowest.status})")


def test_the_only_errors_are_503_json_with_retry_after(freeze):
    assert_only_503_json_with_retry_after(freeze["outcomes"])


def test_while_frozen_every_database_endpoint_answers_503(freeze):
    """One request to each endpoint made 1 s into the freeze, and every request that started and ended
    inside it."""
    probed = freeze["probed"]
    assert set(probed) == set(freeze["names"])
    assert all(seconds <= BOUND_S for _, seconds in probed.values()), probed
    # what is kept in memory may be served meanwhile (nothing can change while the database is frozen): the
    # cached tile, and the catalog once the layers' extents are known (layers.extents)
    from_memory = {"tile", "collections"}
    assert {name: status for name, (status, _) in probed.items() if name not in from_memory} == \
        {name: 503 for name in freeze["names"] if name not in from_memory}
    assert all(probed[name][0] in (200, 503) for name in from_memory)
    inside = [o for o in freeze["outcomes"] if freeze["frozen"] + 0.5 <= o.started and
              o.started + o.seconds <= freeze["thawed"]]
    assert inside and {o.status for o in inside if o.endpoint not in from_memory} == {503}
    assert {o.json_body.get("code") for o in inside if o.status == 503 and o.endpoint != "health"} <= \
        {"request_timeout", "database_unavailable"}
    # the requests handed an idle pooled connection are the ones the deadline ends (the others meet the
    # connect timeout: the abandoned ones keep their connections until psycopg gives up on them)
    answered = [o for o in freeze["outcomes"] if o.status == 503 and o.endpoint != "health"]
    assert "request_timeout" in {o.json_body.get("code") for o in answered}


def test_the_server_recovers_by_itself(freeze):
    seconds = assert_recovered(freeze["outcomes"], freeze["recovered"], freeze["thawed"], RECOVERY_S)
    print(f"\nall endpoints answered 200 again {seconds:.2f} s after the thaw")


def test_acknowledged_writes_are_kept(freeze, site):
    writes = [o for o in freeze["outcomes"] if o.endpoint == "write"]
    acknowledged, stored = assert_acknowledged_writes_kept(freeze["outcomes"], site[1])
    print(f"\n{len(writes)} writes: {len(acknowledged)} acknowledged and kept, "
          f"{len(set(stored) - set(acknowledged))} answered 503 yet committed at the thaw")


def test_the_server_log_has_no_unhandled_exception(freeze, site):
    log = site[4].read_text(errors="replace")
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    assert "503 request_timeout" in log


def test_a_slow_upload_is_not_cut_by_the_deadline(site):
    """The deadline counts from the request's last input: a body trickling in for longer than the deadline
    is still read whole (here: refused for its content, a 4xx, not a 503)."""
    _, _, key, base, _ = site
    boundary = "twinboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.csv"\r\n\r\n'.encode()
            + b"x" * 100 + f"\r\n--{boundary}--\r\n".encode())
    pieces = int(DEADLINE_S) + 3  # a second apart: the body takes longer than the deadline to arrive
    size = -(-len(body) // pieces)

    def paced():
        for i in range(0, len(body), size):
            if i:
                time.sleep(1)
            yield body[i:i + size]

    started = time.monotonic()
    r = httpx.post(f"{base}/etl/monitoring_stations", content=paced(), timeout=60,
                   headers={"Authorization": f"Bearer {key}", "Content-Length": str(len(body)),
                            "Content-Type": "multipart/form-data; boundary=twinboundary"})
    assert time.monotonic() - started > DEADLINE_S
    assert r.status_code != 503 and r.status_code < 500, r.text
