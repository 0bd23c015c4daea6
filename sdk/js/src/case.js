// The wire speaks snake_case, the SDK camelCase.

export function toSnake(name) {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

export function toCamel(name) {
  return name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

/** A copy of `value` with every object key in camelCase, at any depth. */
export function camelize(value) {
  if (Array.isArray(value)) return value.map(camelize);
  if (value !== null && typeof value === 'object') {
    const out = {};
    for (const [key, item] of Object.entries(value)) out[toCamel(key)] = camelize(item);
    return out;
  }
  return value;
}

/**
 * The wire body of camelCase request fields: top-level keys in snake_case, `undefined` left out.
 * Values are sent as given (`userContext` is the caller's data, its keys are not renamed).
 */
export function snakeBody(fields, rename = {}) {
  const out = {};
  for (const [key, item] of Object.entries(fields)) {
    if (item === undefined) continue;
    out[rename[key] ?? toSnake(key)] = item;
  }
  return out;
}
