import pg from "pg";
import { describe, expect, it } from "vitest";
import { isDatabaseUnavailable } from "../store/errors.js";
import { unexpectedError } from "./errors.js";

const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

describe("unexpectedError", () => {
  it("answers 503 database_unavailable in OpenAI's shape when PostgreSQL cannot be reached", async () => {
    // A real driver error: nothing listens on port 1.
    const pool = new pg.Pool({
      connectionString: "postgres://u:p@127.0.0.1:1/db",
      connectionTimeoutMillis: 2_000,
    });
    const refused: unknown = await pool.query("SELECT 1").catch((e: unknown) => e);
    await pool.end();
    const error = unexpectedError(refused);
    expect(error.status).toBe(503);
    expect(error.toJSON()).toEqual({
      error: {
        message: "The coordinator's database is unavailable; retry shortly.",
        type: "service_unavailable",
        code: "database_unavailable",
        param: null,
      },
    });
    expect(error.headers["Retry-After"]).toBe("1");
  });

  it("answers 500 internal_error for anything else", () => {
    for (const e of [new TypeError("x is undefined"), withCode("duplicate key", "23505"), "a string"]) {
      const error = unexpectedError(e);
      expect(error.status).toBe(500);
      expect(error.code).toBe("internal_error");
    }
  });
});

describe("isDatabaseUnavailable", () => {
  it("recognises refused and cut connections and a server going away or starting", () => {
    for (const e of [
      withCode("connect ECONNREFUSED 127.0.0.1:5432", "ECONNREFUSED"),
      withCode("read ECONNRESET", "ECONNRESET"),
      withCode("terminating connection due to administrator command", "57P01"),
      withCode("the database system is starting up", "57P03"),
      withCode("connection failure", "08006"),
      new Error("Connection terminated unexpectedly"),
      new Error("timeout exceeded when trying to connect"),
    ]) {
      expect(isDatabaseUnavailable(e), e.message).toBe(true);
    }
  });

  it("does not mistake statement errors or non-errors for an outage", () => {
    for (const e of [
      withCode("duplicate key value violates unique constraint", "23505"),
      withCode("deadlock detected", "40P01"),
      new Error("boom"),
      { code: "ECONNREFUSED" },
      undefined,
    ]) {
      expect(isDatabaseUnavailable(e)).toBe(false);
    }
  });
});
