"""Reads from a streaming replica: a real primary and a hot standby (pg_basebackup -R) on loopback, the
server writing to the primary and reading items and tiles from the replica (TWIN_DATABASE_READ_URLS).

What a map user must never see: a feature or tile that goes back to an older state, or a tile cached
from before a change that the replica has already replayed. While the replica lags, reads stay on its
(older) state consistently; when it is down, the primary serves."""

import time

import httpx
import psycopg
import pytest
from pydantic import ValidationError

from tests.history_support import LAYER, bearer, source_feature
from tests.replica_support import primary_and_standby
from tests.server_support import logged_server
from tests.tile_support import decode, mercator_tile, tile_url
from twin.settings import Settings

HERE = (120.9311, 32.1017)  # inside the layer's plausible extent, away from everything else
PATCH = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture(scope="module")
def pair():
    with primary_and_standby("twin-replica-") as (root, primary, replica, key):
        with logged_server(primary.url(), root, root / "server.log", database_read_urls=replica.url()) as base:
            with httpx.Client(base_url=base, timeout=30) as client:
                yield {"api": client, "key": key, "primary": primary, "replica": replica}


def replica_sql(pair, sql: str):
    with psycopg.connect(pair["replica"].url(), autocommit=True) as conn:
        return conn.execute(sql).fetchone()[0]


def replayed(pair) -> int:
    """The last change id the replica has."""
    return replica_sql(pair, "SELECT coalesce(max(change_id), 0) FROM twin.change")


def primary_changes(pair) -> int:
    with psycopg.connect(pair["primary"].url()) as conn:
        return conn.execute("SELECT max(change_id) FROM twin.change").fetchone()[0]


def seen(pair, fid: int, url: str) -> tuple[str | None, str | None, str | None, str | None]:
    """(item's name, tile's name, tile ETag, tile cache state) as served now; None for what failed."""
    api = pair["api"]
    item, tile = api.get(f"/collections/{LAYER}/items/{fid}"), api.get(url)
    names = [f["properties"]["name"] for f in decode(tile.content).get(LAYER, [])] if tile.status_code == 200 else []
    assert len(names) <= 1, names
    return (item.json()["properties"]["name"] if item.status_code == 200 else None,
            names[0] if names else None, tile.headers.get("etag"), tile.headers.get("x-tile-cache"))


def rename(pair, fid: int, name: str) -> None:
    response = pair["api"].patch(f"/collections/{LAYER}/items/{fid}", json={"properties": {"name": name}},
                                 headers=bearer(pair["key"]) | PATCH)
    assert response.status_code == 200, response.text
    assert response.json()["properties"]["name"] == name  # the write answers from the primary


def watch_until(pair, fid: int, url: str, name: str, seconds: float = 15) -> list[tuple]:
    """Everything served until both the item and the tile show `name`."""
    served, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        served.append(seen(pair, fid, url))
        if served[-1][:2] == (name, name):
            return served
        time.sleep(0.02)
    raise AssertionError(f"{name!r} not served within {seconds} s; last: {served[-1]}")


def never_back(served: list[tuple], old: str, new: str) -> None:
    for part in (0, 1):
        names = [s[part] for s in served]
        first_new = names.index(new)
        assert set(names[:first_new]) <= {old} and set(names[first_new:]) == {new}, names


@pytest.fixture(scope="module")
def feature(pair):
    response = pair["api"].post(f"/collections/{LAYER}/items", json=source_feature(1, *HERE, name="初版"),
                                headers=bearer(pair["key"]))
    assert response.status_code == 201, response.text
    fid = response.json()["id"]
    url = tile_url(LAYER, mercator_tile(*HERE, 14))
    watch_until(pair, fid, url, "初版")
    return fid, url


def test_the_replica_really_is_a_streaming_standby(pair, feature):
    assert replica_sql(pair, "SELECT pg_is_in_recovery()") is True
    with psycopg.connect(pair["primary"].url()) as conn:
        assert conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").fetchone()[0] == 1
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        with psycopg.connect(pair["replica"].url()) as conn:
            conn.execute("DELETE FROM twin.change")


def test_items_and_tiles_from_the_replica_catch_up_and_never_go_back(pair, feature):
    fid, url = feature
    before = seen(pair, fid, url)
    assert before[:2] == ("初版", "初版") and seen(pair, fid, url)[3] == "hit"
    rename(pair, fid, "二版")
    change = primary_changes(pair)
    served = watch_until(pair, fid, url, "二版")
    never_back(served, "初版", "二版")
    assert replayed(pair) >= change
    after = [seen(pair, fid, url) for _ in range(5)]
    assert {s[:2] for s in after} == {("二版", "二版")}
    assert {s[2] for s in after} == {served[-1][2]} != {before[2]}  # the old tile was evicted, the new one cached
    assert after[-1][3] == "hit"


def test_a_paused_replica_serves_its_older_state_consistently_then_catches_up(pair, feature):
    fid, url = feature
    watch_until(pair, fid, url, "二版")
    cached = seen(pair, fid, url)
    replica_sql(pair, "SELECT pg_wal_replay_pause()")
    try:
        deadline = time.monotonic() + 5
        while replica_sql(pair, "SELECT pg_get_wal_replay_pause_state()") != "paused":
            assert time.monotonic() < deadline, "replay did not pause"
            time.sleep(0.05)
        rename(pair, fid, "三版")
        assert primary_changes(pair) > replayed(pair)
        lagging = [seen(pair, fid, url) for _ in range(30)]
        assert {s[:3] for s in lagging} == {cached[:3]}, "a lagging replica must serve one (old) state"
        assert {s[3] for s in lagging} == {"hit"}  # not evicted at the primary's commit
    finally:
        replica_sql(pair, "SELECT pg_wal_replay_resume()")
    served = watch_until(pair, fid, url, "三版")
    never_back(lagging + served, "二版", "三版")
    assert seen(pair, fid, url)[2] != cached[2]


def test_with_the_replica_down_the_primary_serves(pair, feature):
    fid, url = feature
    rename(pair, fid, "四版")
    watch_until(pair, fid, url, "四版")
    pair["replica"].down()
    rename(pair, fid, "五版")
    served = watch_until(pair, fid, url, "五版", seconds=20)
    # while the pool finds the replica gone a read may fail (503), but none is older than the last one seen
    never_back([s for s in served if s[0] and s[1]], "四版", "五版")


def test_read_urls_must_be_postgresql_urls():
    assert Settings(database_read_urls=" postgresql://a@h:1/d, postgres://b@h:2/d ,").database_read_urls == [
        "postgresql://a@h:1/d", "postgres://b@h:2/d"]
    assert Settings(database_read_urls="").database_read_urls == []
    with pytest.raises(ValidationError, match="not a PostgreSQL URL: 'h:3/d'"):
        Settings(database_read_urls="postgresql://a@h:1/d,mysql://u:secret@h:3/d")
