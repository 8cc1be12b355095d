// Click a feature: a popup with its attributes under their Chinese names (from the queryables).
import * as maplibregl from '../../vendor/maplibre-gl.mjs';
import {fieldsOf} from './api.js';
import {catalogLayerOf} from './layers.js';
import {display, el} from './ui.js';

// Columns every layer has besides its catalog fields.
const COMMON = {fid: {title: '要素编号'}, version: {title: '版本'}, updated_at: {title: '更新时间'}};
const NAME_FIELDS = ['name', 'class_name', 'code'];

let popup;

export function featureTitle(properties) {
  return NAME_FIELDS.map(f => properties[f]).find(v => v !== undefined && v !== null && v !== '') ?? '';
}

export async function attributeTable(layer, properties) {
  const fields = {...COMMON, ...await fieldsOf(layer)};
  const known = Object.keys(fields).filter(name => name in properties && !(name in COMMON));
  const rest = Object.keys(properties).filter(name => !(name in fields) && !name.startsWith('twin:'));
  const tail = Object.keys(COMMON).filter(name => name in properties);
  return el('table', {class: 'attributes'}, [...known, ...rest, ...tail].map(name => el('tr', {'data-field': name},
    el('th', {}, fields[name]?.title ?? name), el('td', {}, display(properties[name], fields[name]?.unit)))));
}

export async function showPopup(map, lngLat, layer, title, properties) {
  const table = await attributeTable(layer, properties);
  popup?.remove();
  popup = new maplibregl.Popup({maxWidth: 'min(360px, calc(100vw - 24px))', className: 'feature-popup'})
    .setLngLat(lngLat)
    .setDOMContent(el('div', {'data-layer': layer},
      el('div', {class: 'popup-layer'}, title),
      el('div', {class: 'popup-title'}, featureTitle(properties)),
      el('div', {class: 'popup-scroll'}, table)))
    .addTo(map);
  return popup;
}

// Resolves the clicked catalog feature (or null); clusters zoom in instead.
export function onFeatureClick(map, titles, handlers) {
  map.on('click', async event => {
    if (handlers.busy()) return;
    const hit = map.queryRenderedFeatures(event.point).find(f => catalogLayerOf(f.layer));
    if (!hit) return;
    const layer = catalogLayerOf(hit.layer);
    if (hit.properties.point_count !== undefined) {
      map.easeTo({center: event.lngLat, zoom: Math.min(map.getZoom() + 2, map.getMaxZoom())});
      return;
    }
    await showPopup(map, event.lngLat, layer, titles.get(layer)?.title ?? layer, hit.properties);
    handlers.picked(layer, hit, event.lngLat);
  });
  map.on('mousemove', event => {
    const hit = map.queryRenderedFeatures(event.point).some(f => catalogLayerOf(f.layer) && f.layer.type !== 'symbol');
    map.getCanvas().style.cursor = hit && !handlers.busy() ? 'pointer' : '';
  });
}
