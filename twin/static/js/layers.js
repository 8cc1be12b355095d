// Catalog layers on the map: each is drawn by the style layers tagged metadata["twin:layer"].

const OPACITY = {
  fill: ['fill-opacity'], line: ['line-opacity'], circle: ['circle-opacity', 'circle-stroke-opacity'],
  symbol: ['text-opacity', 'icon-opacity'], raster: ['raster-opacity'], heatmap: ['heatmap-opacity'],
  'fill-extrusion': ['fill-extrusion-opacity'],
};

export function catalogLayerOf(styleLayer) {
  return styleLayer?.metadata?.['twin:layer'] ?? null;
}

export function styleLayersOf(style, layerId) {
  return style.layers.filter(layer => catalogLayerOf(layer) === layerId);
}

export function groupsOf(style) {
  return style.metadata?.['twin:groups'] ?? [];
}

export function shownByDefault(style, layerId) {
  return styleLayersOf(style, layerId).some(layer => layer.layout?.visibility !== 'none');
}

export function setVisible(map, style, layerId, visible) {
  for (const layer of styleLayersOf(style, layerId)) {
    map.setLayoutProperty(layer.id, 'visibility', visible ? 'visible' : 'none');
  }
}

export function isVisible(map, style, layerId) {
  return styleLayersOf(style, layerId).some(layer => map.getLayoutProperty(layer.id, 'visibility') !== 'none');
}

// Opacity scales the style's own (numeric) opacities, so a 50% layer keeps its internal contrast.
export function setOpacity(map, style, layerId, factor) {
  for (const layer of styleLayersOf(style, layerId)) {
    for (const property of OPACITY[layer.type] ?? []) {
      const own = layer.paint?.[property];
      map.setPaintProperty(layer.id, property, (typeof own === 'number' ? own : 1) * factor);
    }
  }
}
