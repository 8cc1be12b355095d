// The layer tree: groups from the style's metadata, each layer with a toggle, an opacity slider
// and its legend.
import {el} from './ui.js';
import {fieldsOf} from './api.js';
import {groupsOf, setOpacity, setVisible, styleLayersOf} from './layers.js';
import {legendOf} from './legend.js';

export function buildTree(container, map, style, titles, visible, onChange) {
  const rows = groupsOf(style).map(group => {
    const layers = group.layers.filter(id => styleLayersOf(style, id).length);
    return el('details', {class: 'group', open: true, 'data-group': group.id},
      el('summary', {}, group.title, el('span', {class: 'count'}, layers.length)),
      layers.map(id => layerRow(map, style, id, titles.get(id) ?? {title: id}, visible, onChange)));
  });
  container.replaceChildren(...rows);
}

function layerRow(map, style, id, {title, kind}, visible, onChange) {
  const checkbox = el('input', {type: 'checkbox', 'data-layer': id, checked: visible.has(id)});
  const opacity = el('input', {type: 'range', min: 0, max: 100, value: 100, class: 'opacity',
    title: '透明度', 'aria-label': `${title} 不透明度`});
  const swatches = el('span', {class: 'swatches'});
  const detail = el('div', {class: 'layer-legend'});
  const row = el('div', {class: `layer${visible.has(id) ? '' : ' off'}`, 'data-layer': id},
    el('div', {class: 'layer-head'}, el('label', {class: 'layer-name'}, checkbox, swatches, el('span', {}, title)), opacity),
    detail);
  (kind === 'raster' ? Promise.resolve({}) : fieldsOf(id)).then(fields => {
    const legend = legendOf(style, id, fields);
    swatches.replaceChildren(...legend.inline);
    if (legend.detail) detail.replaceChildren(legend.detail);
  });
  checkbox.addEventListener('change', () => {
    setVisible(map, style, id, checkbox.checked);
    if (checkbox.checked) visible.add(id); else visible.delete(id);
    row.classList.toggle('off', !checkbox.checked);
    onChange();
  });
  opacity.addEventListener('input', () => setOpacity(map, style, id, opacity.value / 100));
  return row;
}
