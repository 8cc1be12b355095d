// Water-quality stations: each coloured by the GB 3838 class of its newest classified reading
// (computed here from the water_quality series and set as feature-state `latest_class`), and a
// panel with the recent readings drawn as an SVG chart.
import {getJSON} from './api.js';
import {styleLayersOf} from './layers.js';
import {display, el, openPanel} from './ui.js';
import {lineChart} from './chart.js';

const STATIONS = 'monitoring_stations';
export const READINGS = 'water_quality';
export const CLASS_NAMES = {1: 'Ⅰ类', 2: 'Ⅱ类', 3: 'Ⅲ类', 4: 'Ⅳ类', 5: 'Ⅴ类', 6: '劣Ⅴ类'};
const PARAMETERS = [['do', '溶解氧', 'mg/L'], ['codmn', '高锰酸盐指数', 'mg/L'], ['nh3n', '氨氮', 'mg/L'],
  ['tp', '总磷', 'mg/L'], ['tn', '总氮', 'mg/L'], ['ph', 'pH', ''], ['water_temp', '水温', '℃']];
const RECENT = 168;  // a week of hourly readings
const LATEST_SCAN = 2000;

// Class → colour, read from the station layer's own `match`, so the panel agrees with the map.
export function classColours(style) {
  const layer = styleLayersOf(style, STATIONS).find(l => l.type === 'circle');
  const match = layer?.paint?.['circle-color'];
  const colours = {};
  if (Array.isArray(match) && match[0] === 'match') {
    for (let i = 2; i < match.length - 1; i += 2) colours[match[i]] = match[i + 1];
    colours[0] = match[match.length - 1];
  }
  return colours;
}

const quoted = value => `'${String(value).replaceAll("'", "''")}'`;

// One scan of the newest readings covers the stations reporting now; a station silent for
// longer (a manual or retired one) is asked for its own newest classified reading.
export async function latestClasses(asOf) {
  const moment = {as_of: asOf, datetime: asOf ? `../${asOf}` : null};
  const newest = filter => ({filter, 'filter-lang': 'cql2-text', sortby: '-observed_at',
    properties: 'station_code,water_class,observed_at', ...moment});
  const [recent, stations] = await Promise.all([
    getJSON(`collections/${READINGS}/items`, {...newest('water_class IS NOT NULL'), limit: LATEST_SCAN}),
    getJSON(`collections/${STATIONS}/items`, {properties: 'code', limit: 1000, as_of: asOf}),
  ]);
  const latest = new Map();
  const keep = ({properties: p}) => latest.has(p.station_code) || latest.set(p.station_code, p.water_class);
  recent.features.forEach(keep);
  const silent = stations.features.map(f => f.properties.code).filter(code => !latest.has(code));
  await Promise.all(silent.map(code => getJSON(`collections/${READINGS}/items`,
    {...newest(`water_class IS NOT NULL AND station_code = ${quoted(code)}`), limit: 1})
    .then(body => body.features.forEach(keep))));
  return latest;
}

export async function paintStations(map, style, asOf) {
  const layer = styleLayersOf(style, STATIONS)[0];
  if (!layer) return null;
  const target = {source: layer.source, sourceLayer: layer['source-layer']};
  const latest = await latestClasses(asOf);
  map.removeFeatureState(target);
  for (const [code, waterClass] of latest) map.setFeatureState({...target, id: code}, {latest_class: waterClass});
  return latest;
}

function badge(colours, waterClass) {
  return el('span', {class: 'class-badge', style: `background:${colours[waterClass ?? 0]}`},
    CLASS_NAMES[waterClass] ?? '暂无数据');
}

export async function openStation(style, properties, asOf) {
  const colours = classColours(style);
  const select = el('select', {'aria-label': '监测项目'},
    PARAMETERS.map(([field, name]) => el('option', {value: field}, name)));
  const chart = el('div', {class: 'chart'}, '读取监测数据…');
  const summary = el('div', {class: 'station-latest'});
  openPanel(el('div', {class: 'station', 'data-station': properties.code},
    el('h3', {}, properties.name ?? properties.code),
    el('div', {class: 'station-meta'}, `${properties.code} · ${properties.water_body ?? ''}`),
    el('div', {class: 'station-meta'}, '水质目标：', badge(colours, properties.target_class)),
    summary, el('div', {class: 'chart-controls'}, '近期读数：', select), chart));
  let readings;
  try {
    const body = await getJSON(`collections/${READINGS}/items`, {
      filter: `station_code = ${quoted(properties.code)}`, 'filter-lang': 'cql2-text',
      sortby: '-observed_at', limit: RECENT, as_of: asOf, datetime: asOf ? `../${asOf}` : null,
    });
    readings = body.features.map(f => f.properties).reverse();
  } catch (error) {
    chart.replaceChildren(`监测数据不可用：${error.message}`);
    return;
  }
  const last = [...readings].reverse().find(r => r.water_class);
  summary.replaceChildren('最新水质：', badge(colours, last?.water_class),
    last ? el('span', {class: 'muted'}, ` ${display(last.observed_at)}${last.limiting ? ` · 定类项目 ${last.limiting}` : ''}`) : '');
  const draw = () => {
    const [field, name, unit] = PARAMETERS.find(([f]) => f === select.value);
    chart.replaceChildren(readings.length
      ? lineChart(readings.map(r => ({at: new Date(r.observed_at), value: r[field], colour: colours[r.water_class ?? 0]})),
        `${name}${unit ? `（${unit}）` : ''}`)
      : '暂无监测数据');
  };
  select.addEventListener('change', draw);
  draw();
}
