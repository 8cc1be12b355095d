// The time slider: the map as of the end of a chosen day (tile URLs with `as_of=`), and what
// changed since then highlighted from each visible layer's diff.
import {getJSON} from './api.js';
import {el} from './ui.js';

const DAY = 86400000;
const COLOURS = {added: '#00a86b', modified: '#ff9800', removed: '#d81b60'};
const NAMES = {added: '新增', modified: '修改', removed: '删除'};
const DRAWN = 500;  // features of each kind drawn per layer; the counts are always complete
const FETCHED = 100;  // modified features whose current shape is fetched to draw them
const EMPTY = {type: 'FeatureCollection', features: []};

export function today() {
  const now = new Date();
  return new Date(now.getTime() - now.getTimezoneOffset() * 60000).toISOString().slice(0, 10);
}

// The last moment of a local calendar day, as RFC 3339 in UTC.
export function endOfDay(day) {
  return new Date(`${day}T23:59:59.999`).toISOString();
}

function dayOffset(day) {
  return Math.round((new Date(`${day}T12:00:00`) - new Date(`${today()}T12:00:00`)) / DAY);
}

function dayAt(offset) {
  const date = new Date(new Date(`${today()}T12:00:00`).getTime() + offset * DAY);
  return new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 10);
}

// Every tiled source of the style gets `as_of` (or loses it).
export function applyAsOf(map, style, asOf) {
  for (const [id, source] of Object.entries(style.sources)) {
    if (source.type !== 'vector' || !source.tiles) continue;
    const tiles = source.tiles.map(url => {
      const u = new URL(url.replaceAll('{', '%7B').replaceAll('}', '%7D'));
      if (asOf) u.searchParams.set('as_of', asOf); else u.searchParams.delete('as_of');
      return u.href.replaceAll('%7B', '{').replaceAll('%7D', '}');
    });
    map.getSource(id)?.setTiles(tiles);
  }
}

export function addChangeLayers(map) {
  map.addSource('changes', {type: 'geojson', data: EMPTY});
  const colour = ['match', ['get', 'kind'], 'added', COLOURS.added, 'removed', COLOURS.removed, COLOURS.modified];
  map.addLayer({id: 'changes-fill', type: 'fill', source: 'changes', filter: ['==', ['geometry-type'], 'Polygon'],
    paint: {'fill-color': colour, 'fill-opacity': 0.25}});
  map.addLayer({id: 'changes-line', type: 'line', source: 'changes', filter: ['!=', ['geometry-type'], 'Point'],
    paint: {'line-color': colour, 'line-width': 3}});
  map.addLayer({id: 'changes-point', type: 'circle', source: 'changes', filter: ['==', ['geometry-type'], 'Point'],
    paint: {'circle-radius': 8, 'circle-color': 'rgba(0,0,0,0)', 'circle-stroke-color': colour, 'circle-stroke-width': 2.5}});
}

// A diff's features with their kind; modified entries carry no shape, so theirs is fetched.
async function changedFeatures(layer, diff) {
  const shaped = kind => (diff[kind] ?? []).map(entry => ({...entry.feature, properties: {kind, layer}}));
  const modified = await Promise.all((diff.modified ?? []).slice(0, FETCHED).map(entry =>
    getJSON(`collections/${layer}/items/${entry.fid}`).then(f => ({...f, properties: {kind: 'modified', layer}}))
      .catch(() => null)));
  return [...shaped('added'), ...shaped('removed'), ...modified].filter(f => f?.geometry);
}

// Changes of the visible layers between `asOf` and now, drawn and summed up in the sidebar.
export async function showChanges(map, asOf, layers, titles) {
  const box = document.getElementById('changes');
  const body = document.getElementById('changes-body');
  if (!asOf) {
    map.getSource('changes').setData(EMPTY);
    box.hidden = true;
    return;
  }
  box.hidden = false;
  body.replaceChildren('比较中…');
  const results = await Promise.all(layers.map(layer => getJSON(`collections/${layer}/diff`, {from: asOf, limit: DRAWN})
    .then(async diff => [layer, diff, await changedFeatures(layer, diff)]).catch(error => [layer, error, []])));
  const rows = [];
  for (const [layer, diff] of results) {
    const title = titles.get(layer)?.title ?? layer;
    if (diff instanceof Error) {
      rows.push(el('div', {class: 'muted'}, `${title}：无法比较（${diff.message}）`));
      continue;
    }
    const parts = Object.entries(diff.counts ?? {}).filter(([, n]) => n > 0).map(([kind, n]) =>
      el('span', {class: 'change-count', 'data-kind': kind, style: `color:${COLOURS[kind]}`}, `${NAMES[kind] ?? kind} ${n}`));
    if (parts.length) rows.push(el('div', {class: 'change-row', 'data-layer': layer}, el('span', {}, title), ...parts));
  }
  map.getSource('changes').setData({type: 'FeatureCollection', features: results.flatMap(([, , features]) => features)});
  body.replaceChildren(el('div', {class: 'muted'}, `${asOf.slice(0, 10)} 以来（图上高亮）：`),
    ...(rows.length ? rows : [el('div', {}, '可见图层没有变化')]));
}

export function setupTimeline(initialDay, onChange) {
  const slider = document.getElementById('time-slider');
  const picker = document.getElementById('time-date');
  const label = document.getElementById('time-label');
  picker.max = today();
  let timer;
  function set(day, notify = true) {
    const current = !day || day >= today();
    slider.value = current ? 0 : Math.max(dayOffset(day), Number(slider.min));
    picker.value = current ? '' : day;
    label.textContent = current ? '现在' : `${day} 时`;
    label.classList.toggle('past', !current);
    clearTimeout(timer);
    if (notify) timer = setTimeout(() => onChange(current ? null : day), 250);
  }
  slider.addEventListener('input', () => set(Number(slider.value) === 0 ? null : dayAt(Number(slider.value))));
  picker.addEventListener('change', () => set(picker.value || null));
  set(initialDay, false);
  return set;
}
