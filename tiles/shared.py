"""The shared tile cache: tiles in Redis, so every worker (`twin serve --workers N`) serves what one rendered.

A tile is a hash (data, etag, cache-control) under `twin:tile:<cache key>`. Where it lies is kept
per layer and tile address in a sorted set, `twin:tile-at:<layer>:<tms>:<z>:<x>:<y>`, of the tile
keys scored by their as_of (+inf for the live layer), with the addresses of each level
(`twin:tile-xy:<layer>:<tms>:<z>`) and the levels of each layer (`twin:tile-levels:<layer>`), so a
change evicts by area exactly as the in-memory cache does, tiles of an earlier as_of excepted.

Every worker's change listener evicts every change (deleting is idempotent), so one that misses an
eviction (it failed, or was not running) is covered by the others; a listener that reconnects clears
the shared tiles as it clears its own. While Redis cannot be reached (an eviction failed), a worker
neither reads nor writes it and serves from its own memory; it uses Redis again once it has
cleared it, since the tiles there may have missed evictions meanwhile. A tile whose layers changed while it rendered is removed again
after it is stored (`fresh`). Workers follow the change log each at its own pace, so a worker does
not copy shared tiles into its memory (tiles.provider): one shared by a worker that had not yet seen
a change this worker has already evicted would stay there. A shared tile is thus never served longer
after a change than the slowest listener takes to evict it.
"""

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime

import redis.asyncio as redis

from tiles.cache import CachedTile
from tiles.tms import buffer_degrees, tile_range

log = logging.getLogger("twin.tiles.shared")
PREFIX = "twin:tile"
DIRECT_LOOKUP = 256  # a level's range of at most this many tiles is looked up tile by tile, else listed
BATCH = 500
RETRY_S = 5  # between attempts to clear and use again an unreachable Redis
# KEYS: sorted sets of tile keys; ARGV[i]: the earliest change to KEYS[i] (as_of score). Deletes the tiles
# scored from it on (live ones included) and drops them from the set.
EVICT = """
local evicted = 0
for i, at in ipairs(KEYS) do
  local doomed = redis.call('ZRANGEBYSCORE', at, ARGV[i], '+inf')
  for _, key in ipairs(doomed) do redis.call('UNLINK', key) end
  redis.call('ZREMRANGEBYSCORE', at, ARGV[i], '+inf')
  evicted = evicted + #doomed
end
return evicted
"""


def _at(layer: str, tms: str, z: int, x: int, y: int) -> str:
    return f"{PREFIX}-at:{layer}:{tms}:{z}:{x}:{y}"


def _xy(layer: str, tms: str, z: int) -> str:
    return f"{PREFIX}-xy:{layer}:{tms}:{z}"


def _levels(layer: str) -> str:
    return f"{PREFIX}-levels:{layer}"


class SharedTileCache:
    def __init__(self, url: str, ttl_s: int):
        self.redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.ttl_s = ttl_s
        self._evict = self.redis.register_script(EVICT)
        self.usable = False  # cleared since Redis last failed this worker (it may have missed evictions)
        self.retry_at = 0.0  # when to try clearing it again

    async def close(self) -> None:
        await self.redis.aclose()

    async def get(self, key: str) -> tuple[bytes, str, str] | None:
        """(data, etag, cache-control), or None when absent or Redis cannot answer (then the tile is rendered)."""
        if not self.usable:
            return None
        try:
            data, etag, control = await self.redis.hmget(f"{PREFIX}:{key}", "data", "etag", "control")
        except redis.RedisError as e:
            self._unreachable(e)
            return None
        return None if etag is None else (data, etag.decode(), control.decode())

    async def put(self, key: str, tile: CachedTile, fresh: Callable[[], bool]) -> None:
        if not self.usable:
            return
        name = f"{PREFIX}:{key}"
        score = math.inf if tile.as_of is None else tile.as_of.timestamp()
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(name, mapping={"data": tile.data, "etag": tile.etag, "control": tile.cache_control})
        pipe.expire(name, self.ttl_s)
        for layer in tile.layers:
            at, xy, levels = _at(layer, tile.tms, tile.z, tile.x, tile.y), _xy(layer, tile.tms, tile.z), _levels(layer)
            pipe.zadd(at, {name: score})
            pipe.sadd(xy, f"{tile.x}:{tile.y}")
            pipe.sadd(levels, f"{tile.tms}:{tile.z}")
            for index in (at, xy, levels):
                pipe.expire(index, self.ttl_s)
        try:
            await pipe.execute()
            if not fresh():
                await self.redis.unlink(name)
        except redis.RedisError as e:
            self._unreachable(e)

    async def evict(self, changes: Iterable[tuple[str, tuple[float, float, float, float], datetime]]) -> int:
        """Evict the tiles whose buffered area touches each change's lon/lat box, at every cached level.

        When Redis cannot be reached the cache is set aside until `reset` can clear it.
        """
        if not self.usable:
            if time.monotonic() >= self.retry_at:
                await self.reset()  # clearing covers these changes too
            return 0
        try:
            return await self._evict_areas(changes)
        except redis.RedisError as e:
            self._unreachable(e)
            return 0

    async def _evict_areas(self, changes) -> int:
        boxes = defaultdict(list)
        for layer, bbox, changed_at in changes:
            boxes[layer].append((bbox, changed_at.timestamp() - 0.001))  # float scores: err towards evicting
        if not boxes:
            return 0
        layers = list(boxes)
        pipe = self.redis.pipeline(transaction=False)
        for layer in layers:
            pipe.smembers(_levels(layer))
        levels = await pipe.execute()
        earliest: dict[str, float] = {}

        def touch(layer: str, tms: str, z: int, x: int, y: int, since: float) -> None:
            key = _at(layer, tms, z, x, y)
            earliest[key] = min(earliest.get(key, since), since)

        wide = defaultdict(list)  # (layer, tms, z) → ranges too wide to look up tile by tile: list the level
        for layer, members in zip(layers, levels):
            for member in members:
                tms, z = member.decode().rsplit(":", 1)
                z = int(z)
                reach = buffer_degrees(tms, z)
                for (west, south, east, north), since in boxes[layer]:
                    x0, y0, x1, y1 = tile_range(tms, z, (west - reach, south - reach, east + reach, north + reach))
                    if (x1 - x0 + 1) * (y1 - y0 + 1) > DIRECT_LOOKUP:
                        wide[(layer, tms, z)].append((x0, y0, x1, y1, since))
                        continue
                    for x in range(x0, x1 + 1):
                        for y in range(y0, y1 + 1):
                            touch(layer, tms, z, x, y, since)
        if wide:
            pipe = self.redis.pipeline(transaction=False)
            for level in wide:
                pipe.smembers(_xy(*level))
            for (level, ranges), addresses in zip(wide.items(), await pipe.execute()):
                for address in addresses:
                    x, y = map(int, address.decode().split(":"))
                    for x0, y0, x1, y1, since in ranges:
                        if x0 <= x <= x1 and y0 <= y <= y1:
                            touch(*level, x, y, since)
        keys = list(earliest)
        evicted = 0
        for start in range(0, len(keys), BATCH):
            chunk = keys[start:start + BATCH]
            evicted += await self._evict(keys=chunk, args=[earliest[k] for k in chunk])
        return evicted

    def _unreachable(self, error: Exception) -> None:
        if self.usable:
            log.warning("shared tile cache unreachable (%s); serving from this worker's memory until it is back",
                        error)
        self.usable = False
        self.retry_at = time.monotonic() + RETRY_S

    async def reset(self) -> None:
        """Clear the shared tiles, and use the cache again if that worked."""
        try:
            async for name in self.redis.scan_iter(match=f"{PREFIX}*", count=1000):
                await self.redis.unlink(name)
        except redis.RedisError as e:
            self._unreachable(e)
            return
        if not self.usable:
            log.info("shared tile cache cleared and in use")
        self.usable = True
