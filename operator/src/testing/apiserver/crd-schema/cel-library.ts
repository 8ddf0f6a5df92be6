// The functions CRD rules may call beyond standard CEL, as the API server's environment provides
// them (k8s.io/apiserver/pkg/cel/library, cel-go ext): the strings extension (from @bufbuild/cel),
// Kubernetes lists (isSorted, sum, min, max, indexOf, lastIndexOf), regex (find, findAll), URLs
// (isURL, url and its getters), sets (sets.contains, sets.equivalent, sets.intersects) and the
// optional values `optionalOldSelf: true` binds oldSelf to (hasValue, value, orValue, optional.of,
// optional.none). Each comes with its static typing for the checker.

import {
  type CelFunc,
  type CelInput,
  type CelList,
  type CelMap,
  CelScalar,
  type CelValue,
  celFunc,
  celMap,
  celMethod,
  isCelList,
  isCelMap,
  listType,
} from "@bufbuild/cel";
import { strings } from "@bufbuild/cel/ext";
import {
  BOOL,
  type CelT,
  DYN,
  func,
  INT,
  listOf,
  mapOf,
  method,
  optionalOf as optionalType,
  overloads,
  type Signature,
  STRING,
  URL_TYPE,
} from "./cel-types.js";

const LIST = listType(CelScalar.DYN);
const { DYN: ANY, BOOL: B, INT: I, STRING: S } = CelScalar;

// Optional values and URLs have no CEL runtime type here: they are empty maps, recognized by identity.
const optionals = new WeakMap<object, { value: CelInput | undefined }>();
const urls = new WeakMap<object, URL>();

/** An optional value (`optional.of(value)`, or none when undefined). */
export function celOptional(value: CelInput | undefined): CelMap {
  const wrapper = celMap(new Map());
  optionals.set(wrapper, { value });
  return wrapper;
}

function optionalValue(target: CelValue): CelInput | undefined {
  const optional = typeof target === "object" && target !== null ? optionals.get(target) : undefined;
  if (optional === undefined) throw new Error("no such overload");
  return optional.value;
}

function urlOf(target: CelValue): URL {
  const url = typeof target === "object" && target !== null ? urls.get(target) : undefined;
  if (url === undefined) throw new Error("no such overload");
  return url;
}

/**
 * Go's url.ParseRequestURI, which isURL and url() use: an absolute URI, or an absolute path (read
 * against a placeholder origin whose scheme and host the getters then report as empty).
 */
const PATH_ONLY = "http://path-only.invalid";
function parseRequestUri(text: string): URL | undefined {
  if (text.startsWith("/")) return URL.canParse(text, PATH_ONLY) ? new URL(text, PATH_ONLY) : undefined;
  return /^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(text) && URL.canParse(text) ? new URL(text) : undefined;
}

function urlPart(url: URL, part: "scheme" | "host" | "hostname" | "port"): string {
  if (url.origin === PATH_ONLY) return "";
  switch (part) {
    case "scheme":
      return url.protocol.slice(0, -1);
    case "host":
      return url.host;
    case "hostname":
      return url.hostname.replace(/^\[(.*)\]$/, "$1");
    case "port":
      return url.port;
  }
}

/** CEL ordering of two list elements of one type (numbers across int and double). */
function compare(a: CelValue, b: CelValue): number {
  if ((typeof a === "bigint" || typeof a === "number") && (typeof b === "bigint" || typeof b === "number")) {
    return a < b ? -1 : a > b ? 1 : 0;
  }
  if (typeof a === "string" && typeof b === "string") return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === "boolean" && typeof b === "boolean") return Number(a) - Number(b);
  throw new Error("no such overload");
}

/** CEL equality of two values, for indexOf and the sets functions. */
function celEquals(a: CelValue, b: CelValue): boolean {
  if ((typeof a === "bigint" || typeof a === "number") && (typeof b === "bigint" || typeof b === "number")) {
    // An int and a double are equal when their values are.
    return typeof a === typeof b ? a === b : Number(a) === Number(b);
  }
  if (isCelList(a) && isCelList(b)) {
    return a.size === b.size && [...a].every((item, i) => celEquals(item, b.get(i) as CelValue));
  }
  if (isCelMap(a) && isCelMap(b)) {
    if (a.size !== b.size) return false;
    for (const [k, v] of a) {
      const other = b.get(k as never);
      if (other === undefined || !celEquals(v, other)) return false;
    }
    return true;
  }
  return a === b;
}

function extreme(list: CelList, name: string, sign: number): CelValue {
  const items = [...list];
  if (items.length === 0) throw new Error(`${name} called on empty list`);
  return items.reduce((best, item) => (compare(item, best) * sign > 0 ? item : best));
}

function indexIn(list: CelList, item: CelValue, last: boolean): bigint {
  const items = [...list];
  const positions = items.map((_, i) => i).filter((i) => celEquals(items[i] as CelValue, item));
  const found = last ? positions.at(-1) : positions[0];
  return BigInt(found ?? -1);
}

function contains(list: CelList, items: CelList): boolean {
  return [...items].every((item) => [...list].some((other) => celEquals(item, other)));
}

function findAll(text: string, pattern: string, limit: bigint): string[] {
  const matches = [...text.matchAll(new RegExp(pattern, "gu"))].map((match) => match[0]);
  return limit < 0n ? matches : matches.slice(0, Number(limit));
}

export const LIBRARY_FUNCS: readonly CelFunc[] = [
  ...strings,
  celMethod("isSorted", LIST, [], B, function () {
    const items = [...this];
    return items.every((item, i) => i === 0 || compare(items[i - 1] as CelValue, item) <= 0);
  }),
  celMethod("sum", LIST, [], ANY, function () {
    const items = [...this];
    if (items.some((item) => typeof item === "number"))
      return items.reduce<number>((t, x) => t + Number(x), 0);
    return items.reduce<bigint>((total, item) => total + (item as bigint), 0n);
  }),
  celMethod("min", LIST, [], ANY, function () {
    return extreme(this, "min", -1);
  }),
  celMethod("max", LIST, [], ANY, function () {
    return extreme(this, "max", 1);
  }),
  celMethod("indexOf", LIST, [ANY], I, function (item) {
    return indexIn(this, item, false);
  }),
  celMethod("lastIndexOf", LIST, [ANY], I, function (item) {
    return indexIn(this, item, true);
  }),
  celMethod("find", S, [S], S, function (pattern) {
    return new RegExp(pattern, "u").exec(this)?.[0] ?? "";
  }),
  celMethod("findAll", S, [S], LIST, function (pattern) {
    return findAll(this, pattern, -1n);
  }),
  celMethod("findAll", S, [S, I], LIST, function (pattern, limit) {
    return findAll(this, pattern, limit);
  }),
  celFunc("isURL", [S], B, (text) => parseRequestUri(text) !== undefined),
  celFunc("url", [S], ANY, (text) => {
    const url = parseRequestUri(text);
    if (url === undefined) throw new Error(`URL parse error during conversion from string: ${text}`);
    const wrapper = celMap(new Map());
    urls.set(wrapper, url);
    return wrapper;
  }),
  celMethod("getScheme", ANY, [], S, function () {
    return urlPart(urlOf(this), "scheme");
  }),
  celMethod("getHost", ANY, [], S, function () {
    return urlPart(urlOf(this), "host");
  }),
  celMethod("getHostname", ANY, [], S, function () {
    return urlPart(urlOf(this), "hostname");
  }),
  celMethod("getPort", ANY, [], S, function () {
    return urlPart(urlOf(this), "port");
  }),
  celMethod("getEscapedPath", ANY, [], S, function () {
    return urlOf(this).pathname;
  }),
  celMethod("getQuery", ANY, [], ANY, function () {
    const query = new Map<string, string[]>();
    for (const [k, v] of urlOf(this).searchParams) query.set(k, [...(query.get(k) ?? []), v]);
    return query;
  }),
  celFunc("sets.contains", [LIST, LIST], B, (list, items) => contains(list, items)),
  celFunc("sets.equivalent", [LIST, LIST], B, (a, b) => contains(a, b) && contains(b, a)),
  celFunc("sets.intersects", [LIST, LIST], B, (a, b) =>
    [...a].some((x) => [...b].some((y) => celEquals(x, y))),
  ),
  celMethod("hasValue", ANY, [], B, function () {
    return optionalValue(this) !== undefined;
  }),
  celMethod("value", ANY, [], ANY, function () {
    const value = optionalValue(this);
    if (value === undefined) throw new Error("optional.none() dereference");
    return value;
  }),
  celMethod("orValue", ANY, [ANY], ANY, function (fallback) {
    return optionalValue(this) ?? fallback;
  }),
  celFunc("optional.of", [ANY], ANY, (value) => celOptional(value)),
  celFunc("optional.none", [], ANY, () => celOptional(undefined)),
];

const LIST_T = listOf(DYN);
const onList =
  (result: (elem: CelT) => CelT, arity: number): Signature =>
  (t, args) =>
    t?.kind === "list" && args.length === arity ? result(t.elem) : t?.kind === "dyn" ? DYN : undefined;
const onOptional =
  (arity: number): Signature =>
  (t, args) =>
    t?.kind === "optional" && args.length === arity ? t.inner : undefined;

/** The checker's typing of the functions above, by name (namespaced ones with their namespace). */
export const LIBRARY_SIGNATURES: Readonly<Record<string, Signature>> = {
  charAt: method(STRING, [INT], STRING),
  format: method(STRING, [LIST_T], STRING),
  indexOf: overloads(
    method(STRING, [STRING], INT),
    method(STRING, [STRING, INT], INT),
    onList(() => INT, 1),
  ),
  lastIndexOf: overloads(
    method(STRING, [STRING], INT),
    method(STRING, [STRING, INT], INT),
    onList(() => INT, 1),
  ),
  join: overloads(method(listOf(STRING), [], STRING), method(listOf(STRING), [STRING], STRING)),
  lowerAscii: method(STRING, [], STRING),
  upperAscii: method(STRING, [], STRING),
  trim: method(STRING, [], STRING),
  replace: overloads(method(STRING, [STRING, STRING], STRING), method(STRING, [STRING, STRING, INT], STRING)),
  split: overloads(method(STRING, [STRING], listOf(STRING)), method(STRING, [STRING, INT], listOf(STRING))),
  substring: overloads(method(STRING, [INT], STRING), method(STRING, [INT, INT], STRING)),
  "strings.quote": func([STRING], STRING),
  isSorted: onList(() => BOOL, 0),
  sum: onList((elem) => elem, 0),
  min: onList((elem) => elem, 0),
  max: onList((elem) => elem, 0),
  find: method(STRING, [STRING], STRING),
  findAll: overloads(method(STRING, [STRING], listOf(STRING)), method(STRING, [STRING, INT], listOf(STRING))),
  isURL: func([STRING], BOOL),
  url: func([STRING], URL_TYPE),
  getScheme: method(URL_TYPE, [], STRING),
  getHost: method(URL_TYPE, [], STRING),
  getHostname: method(URL_TYPE, [], STRING),
  getPort: method(URL_TYPE, [], STRING),
  getEscapedPath: method(URL_TYPE, [], STRING),
  getQuery: method(URL_TYPE, [], mapOf(STRING, listOf(STRING))),
  "sets.contains": func([LIST_T, LIST_T], BOOL),
  "sets.equivalent": func([LIST_T, LIST_T], BOOL),
  "sets.intersects": func([LIST_T, LIST_T], BOOL),
  hasValue: (t, args) => (t?.kind === "optional" && args.length === 0 ? BOOL : undefined),
  value: onOptional(0),
  orValue: onOptional(1),
  "optional.of": (t, args) =>
    t === undefined && args.length === 1 ? optionalType(args[0] as CelT) : undefined,
  "optional.none": (t, args) => (t === undefined && args.length === 0 ? optionalType(DYN) : undefined),
};
