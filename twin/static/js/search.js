// Search by name or code: a CQL2 `like` over each layer's search fields (style metadata
// "twin:search"), through the features API, five hits a layer.
import {getJSON} from './api.js';
import {featureTitle, showPopup} from './popup.js';
import {el, notify} from './ui.js';

const PER_LAYER = 5;

export function searchFields(style) {
  const layers = Object.entries(style.metadata?.['twin:layers'] ?? {});
  return new Map(layers.filter(([, meta]) => meta['twin:search']).map(([id, meta]) => [id, meta['twin:search']]));
}

export function likeFilter(fields, text) {
  const literal = `'%${text.replaceAll("'", "''")}%'`;
  return fields.map(field => `${field} LIKE ${literal}`).join(' OR ');
}

function bounds(geometry) {
  const box = [Infinity, Infinity, -Infinity, -Infinity];
  const walk = c => (typeof c[0] === 'number'
    ? (box[0] = Math.min(box[0], c[0]), box[1] = Math.min(box[1], c[1]),
       box[2] = Math.max(box[2], c[0]), box[3] = Math.max(box[3], c[1]))
    : c.forEach(walk));
  walk(geometry.coordinates);
  return box;
}

function hitLabel(feature) {
  const title = featureTitle(feature.properties) || String(feature.id);
  const code = feature.properties.code ?? feature.properties.credit_code;
  return [title, code && code !== title ? el('span', {class: 'muted'}, ` ${code}`) : null];
}

export function setupSearch(map, titles, fieldsByLayer, asOf) {
  const form = document.getElementById('search');
  const input = document.getElementById('search-input');
  const list = document.getElementById('search-results');
  let controller;

  async function search(text) {
    controller?.abort();
    controller = new AbortController();
    const {signal} = controller;
    list.hidden = false;
    list.replaceChildren(el('div', {class: 'search-note'}, '搜索中…'));
    const layers = [...fieldsByLayer.entries()];
    const answers = await Promise.all(layers.map(([layer, fields]) => getJSON(`collections/${layer}/items`, {
      filter: likeFilter(fields, text), 'filter-lang': 'cql2-text', limit: PER_LAYER, as_of: asOf(),
    }, signal).then(body => [layer, body.features ?? []]).catch(error => [layer, error])));
    if (signal.aborted) return;
    const found = answers.filter(([, features]) => Array.isArray(features) && features.length);
    const failed = answers.filter(([, result]) => result instanceof Error && result.name !== 'AbortError');
    list.replaceChildren(...[
      ...found.map(([layer, features]) => el('div', {class: 'search-group'},
        el('div', {class: 'search-layer'}, titles.get(layer)?.title ?? layer),
        features.map(feature => el('button', {type: 'button', class: 'search-hit', 'data-layer': layer,
          onclick: () => choose(layer, feature)}, hitLabel(feature))))),
      found.length ? null : el('div', {class: 'search-note'}, `没有找到“${text}”`),
      failed.length ? el('div', {class: 'search-note warn'}, `${failed.length} 个图层无法搜索：${failed[0][1].message}`) : null,
    ].filter(Boolean));
  }

  function choose(layer, feature) {
    list.hidden = true;
    if (!feature.geometry) return notify('该要素没有位置');
    const box = bounds(feature.geometry);
    if (box[0] === box[2] && box[1] === box[3]) map.flyTo({center: [box[0], box[1]], zoom: Math.max(map.getZoom(), 16)});
    else map.fitBounds(box, {padding: 60, maxZoom: 17});
    const at = [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2];
    map.once('moveend', () => showPopup(map, at, layer, titles.get(layer)?.title ?? layer,
      {...feature.properties, fid: feature.id}));
  }

  form.addEventListener('submit', event => {
    event.preventDefault();
    const text = input.value.trim();
    if (text) search(text);
  });
  input.addEventListener('input', () => { if (!input.value.trim()) list.hidden = true; });
  document.addEventListener('click', event => { if (!form.contains(event.target)) list.hidden = true; });
}
