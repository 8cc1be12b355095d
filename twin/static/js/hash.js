// The shareable part of the view in the URL hash, beside MapLibre's own `map=zoom/lat/lng`:
// `layers=a,b` (the visible catalog layers) and `t=YYYY-MM-DD` (the map as of that day).

function params() {
  return new URLSearchParams(window.location.hash.replace(/^#/, ''));
}

export function readView() {
  const hash = params();
  const layers = hash.get('layers');
  const day = hash.get('t');
  return {
    layers: layers === null ? null : layers.split(',').filter(Boolean),
    day: /^\d{4}-\d\d-\d\d$/.test(day ?? '') ? day : null,
  };
}

export function writeView({layers, day}) {
  const hash = params();
  if (layers) hash.set('layers', layers.join(','));
  if (day) hash.set('t', day); else hash.delete('t');
  // Same plain form as MapLibre writes (it decodes its part), so the two never fight over it.
  const text = decodeURIComponent(hash.toString());
  window.history.replaceState(window.history.state, '', `${window.location.pathname}${window.location.search}#${text}`);
}
