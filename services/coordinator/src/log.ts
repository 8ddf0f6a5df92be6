import { pino } from "pino";

export type Logger = pino.Logger;

/**
 * The coordinator's structured logger. Request and response bodies are never passed to it; the
 * redaction paths are a second line of defence for headers that carry secrets.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "coordinator" },
      redact: {
        paths: [
          "authorization",
          "*.authorization",
          "headers.authorization",
          "apiKey",
          "*.apiKey",
          "adminKey",
        ],
        censor: "[redacted]",
      },
    },
    destination ?? pino.destination({ fd: 2, sync: false }),
  );
}
