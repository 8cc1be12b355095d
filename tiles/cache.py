"""The tile cache: encoded tiles in memory, least recently used first out, bounded by bytes.

A tile's key is its URL path and query (everything that shapes a tile is in the URL);
its entry also records what it shows (layers, grid, z/x/y, as_of), so a change to a layer can
evict exactly the tiles whose area the change touches, at every zoom. The cache only serves
while the change listener is connected (`live`): without it a change could go unseen.
"""

import hashlib
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from datetime import datetime

from tiles.tms import buffer_degrees, tile_range

ENTRY_OVERHEAD = 300  # bytes of bookkeeping per entry, so many tiny (empty) tiles still count


@dataclass(frozen=True)
class CachedTile:
    data: bytes
    etag: str
    cache_control: str
    layers: tuple[str, ...]
    tms: str
    z: int
    x: int
    y: int
    as_of: datetime | None

    @property
    def size(self) -> int:
        return len(self.data) + ENTRY_OVERHEAD


def etag_of(data: bytes) -> str:
    # SHA-256, not BLAKE2b: the CPU has instructions for it (docs/benchmarks.md, Tiles)
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def cache_key(path: str, query_string: bytes, hidden: frozenset[str] = frozenset()) -> str:
    """`path` as the server decoded it, the query as sent: two spellings of one request may be two entries,
    but one entry never serves two requests (a query parsed to put it in order lost the order of repeated
    parameters, which decides which one counts, and cost time on every tile). `hidden`: the
    private layers a composite tile leaves out for its caller (twin.access), which shape the tile as much
    as its URL does."""
    key = path + "?" + query_string.decode("latin-1")
    return key + "#hidden=" + ",".join(sorted(hidden)) if hidden else key


class TileCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.live = False
        self._entries: OrderedDict[str, CachedTile] = OrderedDict()
        # layer → (tms, z) → (x, y) → keys: where each cached tile lies, for eviction by area
        self._where: dict[str, dict[tuple[str, int], dict[tuple[int, int], set[str]]]] = {}
        # layer → how many evictions touched it; a tile rendered across one of those is not stored
        self._generation: defaultdict[str, int] = defaultdict(int)
        self._resets = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedTile | None:
        entry = self._entries.get(key) if self.live else None
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def generation(self, layers: tuple[str, ...]) -> tuple[int, ...]:
        """A mark taken before rendering; `put` stores the tile only if nothing was evicted since."""
        return (self._resets, *(self._generation[name] for name in layers))

    def put(self, key: str, tile: CachedTile, mark: tuple[int, ...]) -> None:
        if not self.live or mark != self.generation(tile.layers) or tile.size > self.max_bytes:
            return
        self._drop(key)
        self._entries[key] = tile
        self.bytes += tile.size
        for layer in tile.layers:
            self._where.setdefault(layer, {}).setdefault((tile.tms, tile.z), {}).setdefault(
                (tile.x, tile.y), set()).add(key)
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        tile = self._entries.pop(key, None)
        if tile is None:
            return
        self.bytes -= tile.size
        for layer in tile.layers:
            level = self._where[layer][(tile.tms, tile.z)]
            keys = level[(tile.x, tile.y)]
            keys.discard(key)
            if not keys:
                del level[(tile.x, tile.y)]
            if not level:
                del self._where[layer][(tile.tms, tile.z)]

    def changed(self, layer: str) -> None:
        """Anything worked out from `layer` before now is out of date (see `generation`)."""
        self._generation[layer] += 1

    def evict_area(self, layer: str, bbox: tuple[float, float, float, float], changed_at: datetime) -> int:
        """Drop the layer's tiles (single-layer and composite) whose buffered area touches a lon/lat box.

        A tile of a past moment (as_of before the change) does not show the change and stays.
        """
        self.changed(layer)
        doomed = []
        for (tms, z), level in self._where.get(layer, {}).items():
            reach = buffer_degrees(tms, z)
            x0, y0, x1, y1 = tile_range(tms, z, (bbox[0] - reach, bbox[1] - reach, bbox[2] + reach, bbox[3] + reach))
            if (x1 - x0 + 1) * (y1 - y0 + 1) <= len(level):
                touched = (level.get((x, y), ()) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1))
            else:
                touched = (keys for (x, y), keys in level.items() if x0 <= x <= x1 and y0 <= y <= y1)
            doomed += [key for keys in touched for key in keys]
        evicted = 0
        for key in doomed:
            tile = self._entries.get(key)
            if tile is not None and (tile.as_of is None or tile.as_of >= changed_at):
                self._drop(key)
                evicted += 1
        return evicted

    def clear(self) -> None:
        self._entries.clear()
        self._where.clear()
        self.bytes = 0
        self._resets += 1
