// String formats the API server validates (apiextensions-apiserver validation/formats.go, checked by
// go-openapi strfmt). Only strings are checked: int32/int64/float/double are documentation to the
// server. Names are compared without dashes, as strfmt normalizes them ("date-time" = "datetime").
// Formats the server does not know are not validated.

import { isIP } from "node:net";

const DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";

const PATTERNS: Record<string, RegExp> = {
  bsonobjectid: /^[0-9a-fA-F]{24}$/,
  email: /^[^@\s<>]+@[^@\s<>]+$/,
  hostname:
    /^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9\-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z0-9\-\p{L}]){2,63})$/u,
  mac: /^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$|^([0-9a-fA-F]{4}\.){2}[0-9a-fA-F]{4}$/,
  uuid: /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i,
  uuid3: /^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i,
  uuid4: /^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$/i,
  uuid5: /^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$/i,
  ssn: /^\d{3}[- ]?\d{2}[- ]?\d{4}$/,
  hexcolor: /^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/,
  rgbcolor:
    /^rgb\(\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*\)$/,
  byte: /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/,
  quantity: /^[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$/,
  k8sshortname: new RegExp(`^${DNS1123_LABEL}$`),
  k8slongname: new RegExp(`^${DNS1123_LABEL}(\\.${DNS1123_LABEL})*$`),
  // Go's time.ParseDuration ("1h30m", "-1.5s", "0"), or strfmt's spelled-out units ("3 days").
  duration:
    /^([-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+|0|(\d+\s*(ns|us|µs|ms|s|m|h|d|w|seconds?|minutes?|hours?|days?|weeks?)\s*)+)$/,
};

const CHECKS: Record<string, (value: string) => boolean> = {
  uri: (value) => value.startsWith("/") || URL.canParse(value),
  ipv4: (value) => isIP(value) !== 0 && value.includes("."),
  ipv6: (value) => isIP(value) !== 0 && value.includes(":"),
  cidr: isCidr,
  date: (value) => isDate(value),
  datetime: isDateTime,
  k8sshortname: (value) => value.length <= 63 && matches("k8sshortname", value),
  k8slongname: (value) => value.length <= 253 && matches("k8slongname", value),
  password: () => true,
};

/** Whether `value` is valid for `format`; true for formats the server does not check. */
export function checkFormat(format: string, value: string): boolean {
  const name = format.replaceAll("-", "");
  const check = CHECKS[name];
  if (check !== undefined) return check(value);
  return PATTERNS[name] === undefined || matches(name, value);
}

function matches(name: string, value: string): boolean {
  return PATTERNS[name]?.test(value) ?? true;
}

function isCidr(value: string): boolean {
  const slash = value.indexOf("/");
  if (slash < 0) return false;
  const version = isIP(value.slice(0, slash));
  const prefix = value.slice(slash + 1);
  return version !== 0 && /^\d{1,3}$/.test(prefix) && Number(prefix) <= (version === 4 ? 32 : 128);
}

/** A calendar date, YYYY-MM-DD, that exists. */
function isDate(value: string): boolean {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  if (match === null) return false;
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const date = new Date(Date.UTC(year, month - 1, day));
  return date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
}

/** RFC 3339 date-time, with the variants strfmt accepts (no seconds fraction, offset without colon). */
function isDateTime(value: string): boolean {
  const match = /^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})?$/.exec(
    value,
  );
  if (match === null || !isDate(match[1] ?? "")) return false;
  return Number(match[2]) < 24 && Number(match[3]) < 60 && Number(match[4]) < 61;
}
