// The legend of a catalog layer, read from its style layers: a constant colour is one swatch, a
// `match` expression is one swatch per case (labelled by metadata["twin:labels"] where the data
// holds codes), headed by metadata["twin:legend"][property] or the matched field's Chinese name.
import {el} from './ui.js';
import {styleLayersOf} from './layers.js';

const COLOURS = {fill: ['fill-color'], line: ['line-color'], circle: ['circle-color', 'circle-stroke-color']};
const MAIN = new Set(['fill-color', 'line-color', 'circle-color']);

function matchedField(input) {
  if (!Array.isArray(input)) return null;
  if (input[0] === 'get' && typeof input[1] === 'string') return input[1];
  for (const part of input.slice(1)) {
    const field = matchedField(part);
    if (field) return field;
  }
  return null;
}

function swatch(type, property, colour) {
  const shape = property === 'circle-stroke-color' ? 'ring' : type;
  const style = shape === 'ring' ? `border-color:${colour}` : `background:${colour}`;
  return el('span', {class: `swatch swatch-${shape}`, style});
}

function entries(layer, property, fields) {
  const value = layer.paint?.[property];
  const meta = layer.metadata ?? {};
  const headings = meta['twin:legend'] ?? {};
  const labels = meta['twin:labels'] ?? {};
  if (!Array.isArray(value) || value[0] !== 'match') {
    const colour = typeof value === 'string' ? value : JSON.stringify(value ?? '').match(/#[0-9a-fA-F]{3,8}/)?.[0];
    if (!MAIN.has(property) || !colour) return null;
    return {heading: headings[property] ?? null, items: [[colour, null]]};
  }
  const field = matchedField(value[1]);
  const items = [];
  for (let i = 2; i < value.length - 1; i += 2) {
    const cases = Array.isArray(value[i]) ? value[i] : [value[i]];
    items.push([value[i + 1], cases.map(c => labels[String(c)] ?? String(c)).join('、')]);
  }
  if (meta['twin:fallback-label']) items.push([value[value.length - 1], meta['twin:fallback-label']]);
  return {heading: headings[property] ?? fields[field]?.title ?? field, items};
}

// {inline: swatches to show beside the layer's name, detail: headed blocks below it}
export function legendOf(style, layerId, fields = {}) {
  const inline = [], blocks = [];
  for (const layer of styleLayersOf(style, layerId)) {
    if (layer.metadata?.['twin:legend'] === false) continue;
    if (layer.type === 'raster') inline.push(el('span', {class: 'swatch swatch-raster'}));
    for (const property of COLOURS[layer.type] ?? []) {
      const legend = entries(layer, property, fields);
      if (!legend) continue;
      if (!legend.heading && legend.items.length === 1 && !legend.items[0][1]) {
        inline.push(swatch(layer.type, property, legend.items[0][0]));
        continue;
      }
      blocks.push(el('div', {class: 'legend-block'},
        legend.heading && el('div', {class: 'legend-heading'}, legend.heading),
        legend.items.map(([colour, label]) => el('div', {class: 'legend-row'},
          swatch(layer.type, property, colour), label ?? ''))));
    }
  }
  return {inline, detail: blocks.length ? el('div', {class: 'legend', 'data-layer': layerId}, blocks) : null};
}
