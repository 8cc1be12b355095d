// Draw a polygon: its perimeter and area, and what lies inside it per visible layer
// (POST /query/intersects, counts only).
import {postJSON} from './api.js';
import {el, hideNotice, notify, openPanel} from './ui.js';

const R = 6378137;
const rad = d => d * Math.PI / 180;
const EMPTY = {type: 'FeatureCollection', features: []};

export function metres(a, b) {
  const h = Math.sin(rad(b[1] - a[1]) / 2) ** 2 + Math.cos(rad(a[1])) * Math.cos(rad(b[1])) * Math.sin(rad(b[0] - a[0]) / 2) ** 2;
  return 2 * R * Math.asin(Math.sqrt(h));
}

// Area of a lon/lat ring on the sphere (Chamberlain & Duquette), in m².
export function squareMetres(ring) {
  let sum = 0;
  for (let i = 0; i < ring.length; i++) {
    const [p1, p2] = [ring[i], ring[(i + 1) % ring.length]];
    sum += rad(p2[0] - p1[0]) * (2 + Math.sin(rad(p1[1])) + Math.sin(rad(p2[1])));
  }
  return Math.abs(sum * R * R / 2);
}

const length = m => (m >= 1000 ? `${(m / 1000).toFixed(2)} 千米` : `${m.toFixed(0)} 米`);
const area = m2 => (m2 >= 1e6 ? `${(m2 / 1e6).toFixed(3)} 平方千米` : `${m2.toFixed(0)} 平方米`) + `（${(m2 / 666.667).toFixed(1)} 亩）`;

export function setupMeasure(map, {titles, visibleLayers, asOf}) {
  const button = document.getElementById('measure-button');
  let vertices = null, pointer = null;

  map.addSource('measure', {type: 'geojson', data: EMPTY});
  map.addLayer({id: 'measure-fill', type: 'fill', source: 'measure', filter: ['==', ['geometry-type'], 'Polygon'],
    paint: {'fill-color': '#ff5722', 'fill-opacity': 0.15}});
  map.addLayer({id: 'measure-line', type: 'line', source: 'measure',
    paint: {'line-color': '#ff5722', 'line-width': 2, 'line-dasharray': [2, 1]}});
  map.addLayer({id: 'measure-vertex', type: 'circle', source: 'measure', filter: ['==', ['geometry-type'], 'Point'],
    paint: {'circle-radius': 4, 'circle-color': '#ffffff', 'circle-stroke-color': '#ff5722', 'circle-stroke-width': 2}});

  function redraw(closed = false) {
    const ring = [...vertices, ...(pointer && !closed ? [pointer] : [])];
    const features = ring.map(c => ({type: 'Feature', geometry: {type: 'Point', coordinates: c}, properties: {}}));
    if (ring.length >= 3) features.push({type: 'Feature', properties: {}, geometry: {type: 'Polygon', coordinates: [[...ring, ring[0]]]}});
    else if (ring.length === 2) features.push({type: 'Feature', properties: {}, geometry: {type: 'LineString', coordinates: ring}});
    map.getSource('measure').setData({type: 'FeatureCollection', features});
  }

  function start() {
    vertices = [];
    button.classList.add('active');
    map.doubleClickZoom.disable();
    map.getCanvas().style.cursor = 'crosshair';
    notify('单击添加顶点，双击结束，Esc 取消', 6);
  }

  function stop() {
    hideNotice();
    vertices = null;
    pointer = null;
    button.classList.remove('active');
    map.getCanvas().style.cursor = '';
    setTimeout(() => map.doubleClickZoom.enable(), 0);
  }

  async function finish() {
    const ring = vertices.filter((c, i) => i === 0 || metres(c, vertices[i - 1]) > 0.01);
    stop();
    if (ring.length < 3) {
      map.getSource('measure').setData(EMPTY);
      return notify('至少需要三个顶点');
    }
    vertices = ring;
    redraw(true);
    vertices = null;
    const closed = [...ring, ring[0]];
    const perimeter = closed.slice(1).reduce((sum, c, i) => sum + metres(closed[i], c), 0);
    const counts = el('div', {class: 'intersects'}, '统计中…');
    openPanel(el('h3', {}, '圈选统计'),
      el('table', {class: 'attributes'},
        el('tr', {}, el('th', {}, '周长'), el('td', {}, length(perimeter))),
        el('tr', {}, el('th', {}, '面积'), el('td', {}, area(squareMetres(ring))))),
      el('h4', {}, '范围内要素'), counts);
    const layers = visibleLayers();
    if (!layers.length) return counts.replaceChildren('没有可统计的可见图层');
    try {
      const body = await postJSON('query/intersects', {
        geometry: {type: 'Polygon', coordinates: [closed]}, layers, features: false, as_of: asOf() ?? undefined,
      });
      counts.replaceChildren(el('table', {class: 'attributes counts'}, layers.map(layer => {
        const summary = body.summary?.[layer];
        const [field, values] = Object.entries(summary?.by ?? {})[0] ?? [];
        const detail = values?.slice(0, 4).map(v => `${v.value ?? '未填'} ${v.count}`).join('，');
        return el('tr', {'data-layer': layer}, el('th', {}, titles.get(layer)?.title ?? layer),
          el('td', {}, el('strong', {}, summary?.count ?? '—'), detail ? el('div', {class: 'muted'}, detail) : null));
      })));
    } catch (error) {
      counts.replaceChildren(`空间查询不可用：${error.message}`);
    }
  }

  button.addEventListener('click', () => (vertices ? finish() : start()));
  map.on('click', event => {
    if (!vertices) return;
    vertices.push(event.lngLat.toArray());
    redraw();
  });
  map.on('dblclick', event => {
    if (!vertices) return;
    event.preventDefault();
    finish();
  });
  map.on('mousemove', event => {
    if (!vertices) return;
    pointer = event.lngLat.toArray();
    redraw();
  });
  document.addEventListener('keydown', event => {
    if (event.key !== 'Escape' || !vertices) return;
    stop();
    map.getSource('measure').setData(EMPTY);
  });
  return {busy: () => vertices !== null};
}
