// Click a river station, an outfall or a pump station: the drainage network upstream of it
// (POST /query/trace from the feature) is highlighted on the map, with its pollution sources.
import {postJSON} from './api.js';
import {notify} from './ui.js';

const TRACED = ['monitoring_stations', 'outfalls', 'pump_stations'];
const SHOWN = ['pipes', 'rivers', 'outfalls', 'pump_stations', 'pollution_sources'];
const LIMIT = 5000;
const SOURCE = 'drainage-trace';
const COLOUR = '#ff6d00';

function ensureLayers(map) {
  if (map.getSource(SOURCE)) return;
  map.addSource(SOURCE, {type: 'geojson', data: {type: 'FeatureCollection', features: []}});
  map.addLayer({id: `${SOURCE}-line`, type: 'line', source: SOURCE,
    filter: ['in', ['get', 'layer'], ['literal', ['pipes', 'rivers']]],
    paint: {'line-color': COLOUR, 'line-width': ['match', ['get', 'layer'], 'rivers', 5, 3], 'line-opacity': 0.8}});
  map.addLayer({id: `${SOURCE}-point`, type: 'circle', source: SOURCE,
    filter: ['!', ['in', ['get', 'layer'], ['literal', ['pipes', 'rivers']]]],
    paint: {'circle-color': COLOUR, 'circle-radius': 6, 'circle-stroke-color': '#ffffff', 'circle-stroke-width': 2}});
}

export function clearTrace(map) {
  map.getSource(SOURCE)?.setData({type: 'FeatureCollection', features: []});
  delete document.body.dataset.drainageTrace;
}

// The hook for a clicked feature: trace from it when it is a station, outfall or pump station.
export async function traceFrom(map, layer, properties) {
  if (!TRACED.includes(layer) || !properties.code) {
    clearTrace(map);
    return;
  }
  ensureLayers(map);
  try {
    const answer = await postJSON('query/trace', {
      feature: {layer, where: {code: properties.code}}, direction: 'upstream', limit: LIMIT});
    const features = SHOWN.flatMap(name => answer[name]?.features ?? []);
    map.getSource(SOURCE).setData({type: 'FeatureCollection', features});
    document.body.dataset.drainageTrace = String(features.length);
    const pipes = answer.pipes?.numberMatched ?? 0;
    const sources = answer.pollution_sources?.numberMatched ?? 0;
    notify(`上游管网：${pipes} 段管道，${answer.outfalls?.numberMatched ?? 0} 个排口，${sources} 个污染源`, 6);
  } catch (error) {
    clearTrace(map);
    if (error.status !== 422) notify(`上游追溯失败：${error.message}`);
  }
}
