/** The phases X-Timing reports, in microseconds (SPEC section 3). */
export const TIMING_PHASES = [
  "parse",
  "auth",
  "reserve",
  "route",
  "queue",
  "encrypt",
  "forward",
  "dispatch",
  "provider_first_token",
  "total",
] as const;
export type TimingPhase = (typeof TIMING_PHASES)[number];

/** Per-request phase timer. Phases are added up, so a retried route counts both tries. */
export class Timing {
  readonly startedAt = performance.now();
  private readonly micros: Record<TimingPhase, number> = {
    parse: 0,
    auth: 0,
    reserve: 0,
    route: 0,
    queue: 0,
    encrypt: 0,
    forward: 0,
    dispatch: 0,
    provider_first_token: 0,
    total: 0,
  };

  /** Adds the time since `since` (a performance.now() value) to a phase; returns now. */
  add(phase: TimingPhase, since: number): number {
    const now = performance.now();
    this.micros[phase] += Math.round((now - since) * 1000);
    return now;
  }

  addMicros(phase: TimingPhase, micros: number): void {
    this.micros[phase] += micros;
  }

  get(phase: TimingPhase): number {
    return this.micros[phase];
  }

  /** The phases so far, total being the time since the start. */
  phases(): Record<TimingPhase, number> {
    this.micros.total = Math.round((performance.now() - this.startedAt) * 1000);
    return { ...this.micros };
  }

  /** The X-Timing header value; total is the time so far. */
  header(): string {
    return JSON.stringify(this.phases());
  }
}
