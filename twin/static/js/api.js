// Calls to the server, relative to the page so the viewer also works behind a path prefix.

const base = new URL('.', window.location.href);

export function apiUrl(path, params = {}) {
  const url = new URL(path.replace(/^\//, ''), base);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
  }
  return url.href;
}

export class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function parsed(response) {
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiFailure(response.status, body?.description || `${response.status} ${response.statusText}`);
  }
  return body;
}

export async function getJSON(path, params, signal) {
  return parsed(await fetch(apiUrl(path, params), {signal, headers: {Accept: 'application/json'}}));
}

export async function postJSON(path, body, signal) {
  return parsed(await fetch(apiUrl(path), {
    method: 'POST', signal, body: JSON.stringify(body),
    headers: {'Content-Type': 'application/json', Accept: 'application/json'},
  }));
}

// The catalog: layer id → {title (zh), kind, group}.
let catalog;
export function collections() {
  catalog ??= getJSON('collections').then(body => new Map(body.collections.map(c => [c.id, {
    title: c.title, kind: c['twin:kind'], group: c['twin:group'],
  }]))).catch(() => new Map());
  return catalog;
}

// Field name → {title, unit} from the layer's queryables (JSON Schema); {} when unavailable.
const queryables = new Map();
export function fieldsOf(layer) {
  if (!queryables.has(layer)) {
    queryables.set(layer, getJSON(`collections/${layer}/queryables`).then(schema => {
      const fields = {};
      for (const [name, property] of Object.entries(schema.properties || {})) {
        fields[name] = {title: property.title || name, unit: property['x-unit'] || property.unit || null};
      }
      return fields;
    }).catch(() => ({})));
  }
  return queryables.get(layer);
}
