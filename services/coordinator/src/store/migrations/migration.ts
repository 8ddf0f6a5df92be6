/** One schema change, applied once in its own transaction. */
export interface Migration {
  /** Strictly increasing, starting at 1; never reused or renumbered once released. */
  readonly version: number;
  /** Short snake_case label, recorded with the version. */
  readonly name: string;
  readonly sql: string;
}
