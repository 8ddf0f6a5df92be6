// Field paths as the API server prints them (k8s.io/apimachinery field.Path): `spec.items[2].name`,
// map keys in brackets without quotes (`spec.labels[app]`), the empty path for the root.

/** `path.name`, or `name` at the root. */
export function child(path: string, name: string): string {
  return path === "" ? name : `${path}.${name}`;
}

/** `path[i]`. */
export function index(path: string, i: number): string {
  return `${path}[${i}]`;
}

/** `path[key]`: a map key, or a schema's `properties[name]` in CRD error paths. */
export function key(path: string, name: string): string {
  return `${path}[${name}]`;
}
