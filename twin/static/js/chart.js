// A small time-series chart in plain SVG: the line of values, each reading a dot in its class colour.
const NS = 'http://www.w3.org/2000/svg';
const W = 320, H = 170, PAD = {left: 40, right: 10, top: 18, bottom: 26};

function svg(tag, attributes, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function short(date) {
  return `${date.getMonth() + 1}/${date.getDate()} ${String(date.getHours()).padStart(2, '0')}时`;
}

export function lineChart(points, title) {
  const valued = points.filter(p => typeof p.value === 'number');
  const root = svg('svg', {viewBox: `0 0 ${W} ${H}`, class: 'line-chart', role: 'img', 'aria-label': title});
  root.append(svg('text', {x: PAD.left, y: 12, class: 'chart-title'}, title));
  if (!valued.length) {
    root.append(svg('text', {x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-note'}, '该项目无读数'));
    return root;
  }
  const t0 = points[0].at.getTime(), t1 = Math.max(points[points.length - 1].at.getTime(), t0 + 1);
  let lo = Math.min(...valued.map(p => p.value)), hi = Math.max(...valued.map(p => p.value));
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const span = hi - lo;
  lo -= span * 0.08; hi += span * 0.08;
  const x = t => PAD.left + (t - t0) / (t1 - t0) * (W - PAD.left - PAD.right);
  const y = v => H - PAD.bottom - (v - lo) / (hi - lo) * (H - PAD.top - PAD.bottom);
  for (const v of [lo + (hi - lo) * 0.1, (lo + hi) / 2, hi - (hi - lo) * 0.1]) {
    root.append(svg('line', {x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: 'grid'}));
    root.append(svg('text', {x: PAD.left - 4, y: y(v) + 3, 'text-anchor': 'end', class: 'tick'},
      Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2)));
  }
  root.append(svg('text', {x: PAD.left, y: H - 8, class: 'tick'}, short(points[0].at)));
  root.append(svg('text', {x: W - PAD.right, y: H - 8, 'text-anchor': 'end', class: 'tick'}, short(points[points.length - 1].at)));
  root.append(svg('polyline', {class: 'series',
    points: valued.map(p => `${x(p.at.getTime()).toFixed(1)},${y(p.value).toFixed(1)}`).join(' ')}));
  for (const p of valued) {
    root.append(svg('circle', {cx: x(p.at.getTime()), cy: y(p.value), r: valued.length > 60 ? 1.8 : 3, fill: p.colour}));
  }
  return root;
}
