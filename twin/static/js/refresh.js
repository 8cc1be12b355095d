// Vector tiles refreshed only where something changed: a change event's `bbox` (lon/lat, the feature before
// and after) names the tiles it touches in each source that draws the change's layer, and MapLibre reloads
// those of them it holds on screen (map.refreshTiles), never a whole source. The box is first cut to the view.
// MapLibre also keeps tiles off screen, and shows them again when the view comes back (it has no public call to
// drop them), so recent changes are remembered and, after each move, the tiles on screen that a change touched
// since they were last refreshed are refreshed too. Changes that come in a burst are gathered and refreshed once.
import {MercatorCoordinate} from '../../vendor/maplibre-gl.mjs';

const GATHER_MS = 100;
const KEEP_MS = 15 * 60_000;
const KEEP = 1000;

function sourcesByLayer(style) {
  const sources = new Map();
  for (const layer of style.layers) {
    const id = layer.metadata?.['twin:layer'];
    if (id && style.sources[layer.source]?.type === 'vector') {
      sources.set(id, (sources.get(id) ?? new Set()).add(layer.source));
    }
  }
  return sources;
}

function inView(map, [west, south, east, north]) {
  const view = map.getBounds();
  const box = [Math.max(west, view.getWest()), Math.max(south, view.getSouth()),
    Math.min(east, view.getEast()), Math.min(north, view.getNorth())];
  return box[0] <= box[2] && box[1] <= box[3] ? box : null;
}

// The tiles (z/x/y of the source's grid) the box touches, from the source's first zoom to one past the map's:
// the tiles on screen are among them, whatever the source's tile size.
function tilesOf(map, source, [west, south, east, north]) {
  const nw = MercatorCoordinate.fromLngLat([west, north]);
  const se = MercatorCoordinate.fromLngLat([east, south]);
  const tiles = [];
  const last = Math.min(source.maxzoom, Math.ceil(map.getZoom()) + 1);
  for (let z = source.minzoom; z <= last; z++) {
    const n = 2 ** z;
    const cell = v => Math.min(n - 1, Math.max(0, Math.floor(v * n)));
    for (let x = cell(nw.x); x <= cell(se.x); x++) {
      for (let y = cell(nw.y); y <= cell(se.y); y++) tiles.push({z, x, y});
    }
  }
  return tiles;
}

export function tileRefresher(map, style, asOf) {
  const sources = sourcesByLayer(style);
  const recent = [];  // {layer, bbox, at}: the changes of the last KEEP_MS
  const refreshedAt = new Map();  // `source z/x/y` → when it was last refreshed
  const pending = new Map();  // source id → Map(tile key → tile)
  let timer = null;
  const flush = () => {
    timer = null;
    for (const [source, tiles] of pending) map.refreshTiles(source, [...tiles.values()]);
    document.body.dataset.refreshedTiles = (Number(document.body.dataset.refreshedTiles ?? 0)
      + [...pending.values()].reduce((sum, tiles) => sum + tiles.size, 0));
    pending.clear();
  };
  const gather = change => {
    const box = inView(map, change.bbox);
    if (!box) return;
    for (const id of sources.get(change.layer) ?? []) {
      const source = map.getSource(id);
      if (!source) continue;
      const tiles = pending.get(id) ?? new Map();
      for (const tile of tilesOf(map, source, box)) {
        const key = `${tile.z}/${tile.x}/${tile.y}`;
        if ((refreshedAt.get(`${id} ${key}`) ?? -1) >= change.at) continue;
        refreshedAt.set(`${id} ${key}`, performance.now());
        tiles.set(key, tile);
      }
      if (tiles.size) pending.set(id, tiles);
    }
    if (pending.size && !timer) timer = setTimeout(flush, GATHER_MS);
  };
  map.on('moveend', () => {
    while (recent.length && (recent.length > KEEP || performance.now() - recent[0].at > KEEP_MS)) recent.shift();
    if (!recent.length) refreshedAt.clear();
    if (!asOf()) recent.forEach(gather);
  });
  return (change, eventId) => {
    document.body.dataset.lastChange = eventId;
    if (!change.bbox) return;
    const remembered = {layer: change.layer, bbox: change.bbox, at: performance.now()};
    recent.push(remembered);
    if (!asOf()) gather(remembered);  // a past day's tiles never change
  };
}
