// Small DOM helpers shared by the viewer's modules.

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === 'class') node.className = value;
    else if (key === 'style') node.style.cssText = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

let statusTimer;
export function notify(message, seconds = 5) {
  const status = document.getElementById('status');
  status.textContent = message;
  status.hidden = false;
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => { status.hidden = true; }, seconds * 1000);
}

export function hideNotice() {
  clearTimeout(statusTimer);
  document.getElementById('status').hidden = true;
}

export function openPanel(...content) {
  const body = document.getElementById('panel-body');
  body.replaceChildren(...content);
  document.getElementById('panel').hidden = false;
}

export function closePanel() {
  document.getElementById('panel').hidden = true;
}

// A value as a person reads it: 是/否, dates without the time zone noise, units.
export function display(value, unit) {
  if (value === null || value === undefined || value === '') return '—';
  if (value === true || value === 'true') return '是';
  if (value === false || value === 'false') return '否';
  if (typeof value === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(value)) {
    return new Date(value).toLocaleString('zh-CN', {hour12: false});
  }
  if (typeof value === 'number' && !Number.isInteger(value)) value = Math.round(value * 1000) / 1000;
  return unit ? `${value} ${unit}` : String(value);
}
