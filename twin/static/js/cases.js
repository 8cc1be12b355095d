// The case panel (issue 21): the loop's queue filtered by state and overdue, each case's timeline with its
// photos, and the cases of the last 90 days as a heat over the grids. Cases on the map by state are the
// `cases` layer's style. The loop's API needs a key (dispatch centre, supervisor, department): it is asked
// for once and kept for the browser tab only (sessionStorage).
import {ApiFailure, apiUrl} from './api.js';
import {display, el, openPanel} from './ui.js';

const STATES = ['上报', '立案', '派遣', '处置', '反馈', '核查', '结案', '不予立案'];
const KEY = 'twin.caseKey';
const HEAT = 'case-heat';
const HEAT_DAYS = 90;

function send(path, params) {
  const key = sessionStorage.getItem(KEY);
  const headers = {Accept: 'application/json', ...(key ? {Authorization: `Bearer ${key}`} : {})};
  return fetch(apiUrl(path, params), {headers});
}

async function getCases(path, params) {
  const response = await send(path, params);
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiFailure(response.status, body?.description || `${response.status}`);
  return body;
}

function keyForm(done) {
  const input = el('input', {type: 'password', id: 'case-key', placeholder: 'twin_…', 'aria-label': '案件系统密钥'});
  return el('form', {class: 'case-key', onsubmit: event => {
    event.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    done();
  }}, el('label', {for: 'case-key'}, '密钥（指挥中心、监督员或处置部门）'), input, el('button', {type: 'submit'}, '进入'));
}

async function showQueue(map, filter) {
  const again = () => showQueue(map, filter);
  const heading = el('h2', {}, '城市管理案件');
  if (!sessionStorage.getItem(KEY)) {
    openPanel(heading, keyForm(again));
    return;
  }
  const state = el('select', {id: 'case-state', onchange: () => { filter.state = state.value; again(); }},
    el('option', {value: ''}, '全部状态'),
    STATES.map(s => el('option', {value: s, selected: s === filter.state}, s)));
  const overdue = el('input', {type: 'checkbox', id: 'case-overdue', checked: filter.overdue,
    onchange: () => { filter.overdue = overdue.checked; again(); }});
  const controls = el('div', {class: 'case-filters'}, state, el('label', {}, overdue, '仅超期'),
    el('button', {type: 'button', id: 'case-heat-button', onclick: () => showHeat(map)}, '网格热度'));
  let body;
  try {
    body = await getCases('cases', {limit: 100, state: filter.state, overdue: filter.overdue ? 'true' : null});
  } catch (error) {
    if (error.status === 401) sessionStorage.removeItem(KEY);
    openPanel(heading, el('p', {class: 'case-error'}, error.message), keyForm(again));
    return;
  }
  const items = body.cases.map(c => el('li', {'data-case': c.case_no, style: 'cursor: pointer; margin: 4px 0',
    onclick: () => showCase(map, c.case_no, filter)},
    `${c.case_no} ${c.class_name} · ${c.state}`,
    c.overdue ? el('span', {class: 'overdue', style: 'color: #c00; margin-left: 6px'}, '超期') : null));
  openPanel(heading, controls, el('p', {}, `共 ${body.numberReturned} 件`), el('ol', {class: 'case-list'}, items));
}

async function showCase(map, caseNo, filter) {
  const c = await getCases(`cases/${caseNo}`);
  map.flyTo({center: [c.lon, c.lat], zoom: Math.max(map.getZoom(), 16)});
  const steps = c.steps.map(s => el('li', {},
    el('b', {}, s.to_state), ` ${display(s.at)} · ${s.actor}`,
    s.on_time === false ? el('span', {style: 'color: #c00; margin-left: 6px'}, '超时') : null,
    s.note ? el('div', {class: 'note'}, s.note) : null));
  const photos = el('div', {class: 'case-photos'});
  for (const photo of c.photos) {
    const response = await send(photo.href.replace(/^\//, ''));
    if (!response.ok) continue;
    photos.append(el('img', {src: URL.createObjectURL(await response.blob()), alt: `${photo.state}照片`,
      title: photo.state, style: 'max-width: 45%; margin: 2px'}));
  }
  openPanel(el('h2', {}, `${c.case_no} ${c.class_name}`),
    el('p', {}, `${c.state}${c.overdue ? '（超期）' : ''} · ${c.department ?? '待派遣'} · 网格 ${c.grid_code ?? '—'}`),
    el('p', {}, c.description ?? ''),
    el('ol', {class: 'case-timeline'}, steps), photos,
    el('button', {type: 'button', onclick: () => showQueue(map, filter)}, '返回列表'));
}

// The grids filled by how many cases were reported in each over the last 90 days.
async function showHeat(map) {
  const end = new Date();
  const start = new Date(end.getTime() - HEAT_DAYS * 86400e3);
  const [grids, stats] = await Promise.all([
    getCases('collections/grids/items', {limit: 10000, properties: 'code'}),
    getCases('cases/statistics', {by: 'grid', start: start.toISOString(), end: end.toISOString()}),
  ]);
  const counts = new Map(stats.groups.map(g => [g.grid, g.cases]));
  for (const f of grids.features) f.properties = {code: f.properties.code, cases: counts.get(f.properties.code) ?? 0};
  const most = Math.max(1, ...counts.values());
  if (map.getSource(HEAT)) map.getSource(HEAT).setData(grids);
  else {
    map.addSource(HEAT, {type: 'geojson', data: grids});
    const firstSymbol = map.getStyle().layers.find(layer => layer.type === 'symbol')?.id;
    map.addLayer({id: HEAT, type: 'fill', source: HEAT, filter: ['>', ['get', 'cases'], 0], paint: {
      'fill-color': ['interpolate', ['linear'], ['get', 'cases'], 1, '#fee8c8', most, '#b30000'],
      'fill-opacity': 0.6,
    }}, firstSymbol);
  }
  document.body.dataset.caseHeat = counts.size;
}

export function setupCases(map) {
  const filter = {state: '', overdue: false};
  document.querySelector('.tools').append(el('button', {id: 'cases-button', type: 'button', title: '城市管理案件',
    onclick: () => showQueue(map, filter)}, '案件'));
}
