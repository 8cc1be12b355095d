// The one-map viewer: the composite style from /styles/onemap, and the tools around the map.
import * as maplibregl from '../../vendor/maplibre-gl.mjs';
import {collections, getJSON} from './api.js';
import {readView, writeView} from './hash.js';
import {buildTree} from './layertree.js';
import {groupsOf, shownByDefault} from './layers.js';
import {keepAbovePanel, setupLayout} from './layout.js';
import {setupMeasure} from './measure.js';
import {onFeatureClick} from './popup.js';
import {setupCases} from './cases.js';
import {traceFrom} from './drainage.js';
import {searchFields, setupSearch} from './search.js';
import {openStation, paintStations} from './stations.js';
import {setupLive} from './live.js';
import {addChangeLayers, applyAsOf, endOfDay, setupTimeline, showChanges} from './timeline.js';
import {closePanel, notify} from './ui.js';

const CJK_FONTS = "'Noto Sans CJK SC', 'Source Han Sans SC', 'Microsoft YaHei', 'PingFang SC', sans-serif";

async function start() {
  let style;
  try {
    style = await getJSON('styles/onemap');
  } catch (error) {
    notify(`无法读取地图样式：${error.message}`, 600);
    return;
  }
  const titles = await collections();
  const all = groupsOf(style).flatMap(group => group.layers);
  const view = readView();
  const visible = new Set((view.layers ?? all.filter(id => shownByDefault(style, id))).filter(id => all.includes(id)));
  let day = view.day;
  const asOf = () => (day ? endOfDay(day) : null);

  // The map opens as the link says: layers shown or hidden, tiles as of the day.
  const initial = structuredClone(style);
  for (const layer of initial.layers) {
    const id = layer.metadata?.['twin:layer'];
    if (id) layer.layout = {...layer.layout, visibility: visible.has(id) ? 'visible' : 'none'};
  }
  delete initial.center;
  delete initial.zoom;
  const map = new maplibregl.Map({
    container: 'map', style: initial, hash: 'map', bounds: style.metadata?.['twin:bounds'],
    localIdeographFontFamily: CJK_FONTS, attributionControl: {compact: true, customAttribution: '新吴区一张图'},
  });
  window.twinMap = map;
  map.addControl(new maplibregl.NavigationControl(), 'bottom-right');
  map.addControl(new maplibregl.ScaleControl({unit: 'metric'}), 'bottom-left');
  let warned = false;
  map.on('error', event => {
    console.warn('map:', event.error?.message ?? event);
    if (!warned) notify(`部分地图数据加载失败：${event.error?.message ?? ''}`, 8);
    warned = true;
  });

  const save = () => writeView({layers: [...visible], day});
  map.on('load', () => {
    if (day) applyAsOf(map, style, asOf());
    addChangeLayers(map);
    const vectorVisible = () => [...visible].filter(id => titles.get(id)?.kind !== 'raster');
    const measure = setupMeasure(map, {titles, visibleLayers: vectorVisible, asOf});
    const refreshChanges = () => showChanges(map, asOf(), vectorVisible(), titles);
    let followLive = () => {};
    buildTree(document.getElementById('layer-tree'), map, style, titles, visible, () => {
      save();
      followLive();
      if (day) refreshChanges();
    });
    setupSearch(map, titles, searchFields(style), asOf);
    onFeatureClick(map, titles, {
      busy: measure.busy,
      picked: (layer, feature, lngLat) => {
        traceFrom(map, layer, feature.properties);  // stations, outfalls, pump stations: their upstream (drainage.js)
        if (layer !== 'monitoring_stations') return;
        openStation(style, feature.properties, asOf());
        keepAbovePanel(map, lngLat);
      },
    });
    const stations = () => paintStations(map, style, asOf())
      .then(latest => { document.body.dataset.waterClasses = latest?.size ?? 0; })
      .catch(error => notify(`水质类别不可用：${error.message}`));
    setupTimeline(day, chosen => {
      day = chosen;
      save();
      applyAsOf(map, style, asOf());
      stations();
      refreshChanges();
    });
    stations();
    setupCases(map);  // the case panel (cases.js)
    setupLive(map, style, asOf, vectorVisible)  // open alerts and readings as they arrive (live.js)
      .then(follow => { followLive = follow; });
    if (day) refreshChanges();
    save();
    document.body.classList.add('ready');
  });

  document.getElementById('panel-close').addEventListener('click', closePanel);
  setupLayout(map);
}

start();
