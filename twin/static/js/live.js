// The live map: one EventSource on /stream (changes, alerts and water-quality readings). Open alerts are listed
// in the sidebar and drawn over the map; clicking one flies to it and highlights its upstream reaches and ranked
// suspects (the alert's context: sources, outfalls, pump stations). A reading of the station whose panel is
// open redraws the panel; the station's colour follows its newest class. A change or an alert refreshes the
// vector tiles it touched (refresh.js). The browser's EventSource resumes by Last-Event-ID by itself.
// Only what the map shows comes down the stream (`layers=`): the changes of the layers shown, the alerts and the
// readings; so a bulk load of a hidden layer sends nothing while it stays hidden. Showing or hiding a layer opens
// the stream again after the last event id, so a layer shown again gets the changes it missed (their tiles are
// refreshed) and the others lose none.
import {apiUrl, collections, getJSON} from './api.js';
import {tileRefresher} from './refresh.js';
import {READINGS, openStation} from './stations.js';
import {el} from './ui.js';

const TOPICS = 'changes,alerts,observations';
const ALERTS = 'alerts';  // the alerts layer, whose changes are the alert events

const SEVERITY = {critical: '严重', warning: '警告', info: '提示'};
const COLOURS = {critical: '#d50000', warning: '#ff6d00', info: '#2962ff'};
const EMPTY = {type: 'FeatureCollection', features: []};

function addOverlays(map) {
  map.addSource('live-alerts', {type: 'geojson', data: EMPTY});
  map.addSource('live-suspects', {type: 'geojson', data: EMPTY});
  map.addSource('live-reaches', {type: 'geojson', data: EMPTY});
  map.addLayer({id: 'live-reaches', type: 'line', source: 'live-reaches',
    paint: {'line-color': '#ff1744', 'line-width': 4, 'line-opacity': 0.6}});
  map.addLayer({id: 'live-alerts', type: 'circle', source: 'live-alerts', paint: {
    'circle-radius': 12, 'circle-color': 'rgba(0,0,0,0)', 'circle-stroke-width': 3,
    'circle-stroke-color': ['match', ['get', 'severity'], 'critical', COLOURS.critical, 'warning', COLOURS.warning,
      COLOURS.info]}});
  map.addLayer({id: 'live-suspects', type: 'circle', source: 'live-suspects', paint: {
    'circle-radius': 9, 'circle-color': '#ffd600', 'circle-stroke-color': '#3e2723', 'circle-stroke-width': 2}});
  map.addLayer({id: 'live-suspects-rank', type: 'symbol', source: 'live-suspects',
    layout: {'text-field': ['to-string', ['get', 'rank']], 'text-size': 11, 'text-allow-overlap': true}});
}

function alertRow(feature, chosen) {
  const p = feature.properties;
  const acknowledged = p.state === 'acknowledged' ? ' · 已确认' : '';
  return el('li', {class: 'alert-item', 'data-alert': feature.id, onclick: () => chosen(feature)},
    el('span', {class: 'alert-severity', style: `color:${COLOURS[p.severity] ?? '#555'}`},
      SEVERITY[p.severity] ?? p.severity),
    ` ${p.thing_name ?? p.station_code ?? ''} · ${p.rule}`,
    el('div', {class: 'muted'}, `${p.parameter} ${p.worst_value ?? ''}（限值 ${p.limit_value ?? '—'}）${acknowledged}`));
}

async function highlight(map, feature) {
  const context = typeof feature.properties.context === 'string'
    ? JSON.parse(feature.properties.context) : feature.properties.context;
  if (feature.geometry) map.flyTo({center: feature.geometry.coordinates, zoom: 14});
  const suspects = await Promise.all((context?.suspects ?? []).slice(0, 10).map(s =>
    getJSON(`collections/${s.layer}/items/${s.fid}`).then(f => ({...f, properties: {rank: s.rank, why: s.why}}))
      .catch(() => null)));
  const reaches = await Promise.all((context?.reaches ?? []).map(r =>
    getJSON(`collections/rivers/items/${r.fid}`).catch(() => null)));
  map.getSource('live-suspects').setData({type: 'FeatureCollection', features: suspects.filter(Boolean)});
  map.getSource('live-reaches').setData({type: 'FeatureCollection', features: reaches.filter(Boolean)});
  document.body.dataset.suspects = suspects.filter(Boolean).length;
}

// `shown()`: the vector layers on the map now. Returns `follow`, to call when a layer is shown or hidden.
export async function setupLive(map, style, asOf, shown) {
  const section = el('section', {id: 'alerts', class: 'alerts'}, el('h2', {}, '预警'));
  const list = el('ul', {id: 'alerts-body', class: 'alerts-body'});
  section.append(list);
  document.getElementById('sidebar').prepend(section);
  addOverlays(map);
  const open = new Map();
  const render = () => {
    const newest = (a, b) => (b.properties.first_at ?? '').localeCompare(a.properties.first_at ?? '');
    const features = [...open.values()].sort(newest);
    list.replaceChildren(...(features.length ? features.map(f => alertRow(f, chosen => highlight(map, chosen)))
      : [el('li', {class: 'muted'}, '暂无预警')]));
    map.getSource('live-alerts').setData({type: 'FeatureCollection', features});
    document.body.dataset.openAlerts = features.length;
  };
  const refresh = tileRefresher(map, style, asOf);
  const handlers = {change: message => refresh(JSON.parse(message.data), message.lastEventId)};
  handlers.alert = message => {
    const change = JSON.parse(message.data);
    refresh(change, message.lastEventId);
    if (section.hidden) return;
    if (change.feature && change.feature.properties.state !== 'closed') open.set(change.fid, change.feature);
    else open.delete(change.fid);
    render();
  };
  handlers.observation = message => {
    const reading = JSON.parse(message.data).feature?.properties;
    if (!reading) return;
    document.body.dataset.lastReading = message.lastEventId;
    const stations = style.layers.find(l => l.metadata?.['twin:layer'] === 'monitoring_stations');
    if (stations && reading.water_class) {
      map.setFeatureState({source: stations.source, sourceLayer: stations['source-layer'], id: reading.station_code},
        {latest_class: reading.water_class});
    }
    const panel = document.querySelector(`[data-station="${CSS.escape(reading.station_code)}"]`);
    if (panel && !asOf()) {
      const code = `'${reading.station_code.replaceAll("'", "''")}'`;
      getJSON('collections/monitoring_stations/items', {filter: `code = ${code}`, 'filter-lang': 'cql2-text', limit: 1})
        .then(body => body.features[0] && openStation(style, body.features[0].properties, null));
    }
  };
  const known = await collections();
  let events = null;
  let lastId = null;
  let followed = null;
  const opened = layers => {  // an empty list would ask for every layer
    if (!layers.length) return null;
    const source = new EventSource(apiUrl('stream', {topics: TOPICS, layers: layers.join(), after: lastId}));
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, message => {
        lastId = message.lastEventId;
        handle(message);
      });
    }
    return source;
  };
  const follow = () => {
    const layers = [...new Set([...shown(), ALERTS, READINGS])].filter(id => known.has(id)).sort();
    if (layers.join() === followed?.join()) return;
    events?.close();
    followed = layers;
    document.body.dataset.streamLayers = layers.join();
    events = opened(layers);
  };
  follow();
  try {
    for (const feature of (await getJSON('alerts')).features) open.set(feature.id, feature);
    render();
  } catch {
    section.hidden = true;  // the alerts layer is private to this viewer
  }
  return follow;
}
