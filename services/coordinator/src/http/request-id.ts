import { randomUUID } from "node:crypto";

/** A new request identifier: "req_" and a random UUID's 32 hex digits (122 random bits). */
export function newRequestId(): string {
  return `req_${randomUUID().replaceAll("-", "")}`;
}
