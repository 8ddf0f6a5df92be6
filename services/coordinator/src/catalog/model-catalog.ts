import type pg from "pg";
import type { Logger } from "pino";
import { InvalidArgumentError } from "../store/errors.js";
import { ModelNotFoundError } from "./errors.js";

export interface CatalogModel {
  id: string;
  displayName: string;
  ownedBy: string;
  inputMicroUsdPerMillion: bigint;
  outputMicroUsdPerMillion: bigint;
  /** Disabled models stay in the catalog but are refused as unknown. */
  enabled: boolean;
  /**
   * SHA-256 of the model's vocabulary (vocabularies table): its token counts are the coordinator's
   * own. Undefined: no vocabulary, and usage is only bounded from the text (billing/usage-meter.ts).
   */
  vocabularySha256: string | undefined;
  /**
   * The shortest `dimensions` an embeddings request may ask for: the model was trained for
   * Matryoshka shortening down to it. Undefined: only the model's own length.
   */
  embeddingMinDimensions: number | undefined;
  createdAt: Date;
  updatedAt: Date;
}

export interface CatalogModelInput {
  id: string;
  displayName?: string;
  ownedBy?: string;
  inputMicroUsdPerMillion: bigint;
  outputMicroUsdPerMillion: bigint;
  enabled?: boolean;
  /** See CatalogModel; absent or undefined: none. */
  embeddingMinDimensions?: number | undefined;
}

export interface ModelCatalogOptions {
  /** How often the snapshot is reloaded to pick up other replicas' writes (default 10 s). */
  refreshIntervalMs?: number;
  logger?: Logger;
  /**
   * Told after every reload, and waited for: the vocabularies follow the catalog, so a write made
   * here (a model given a vocabulary) returns once this replica counts with it.
   */
  onRefresh?: (models: readonly CatalogModel[]) => Promise<void> | void;
}

const MODEL_ID_PATTERN = /^[A-Za-z0-9._:/-]{1,128}$/;
const MAX_TEXT_LENGTH = 200;
const MAX_INT64 = 2n ** 63n - 1n;
/** Longer than any embedding model's vectors (the largest are 4,096 to 8,192 long). */
const MAX_EMBEDDING_DIMENSIONS = 65_536;

interface ModelRow {
  id: string;
  display_name: string;
  owned_by: string;
  input: string;
  output: string;
  enabled: boolean;
  tokenizer_sha256: string | null;
  embedding_min_dimensions: number | null;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = `id, display_name, owned_by, input_micro_usd_per_million::text AS input,
  output_micro_usd_per_million::text AS output, enabled, tokenizer_sha256, embedding_min_dimensions,
  created_at, updated_at`;

/** The channel a catalog write is announced on (no payload: every replica reloads its snapshot). */
export const CATALOG_CHANNEL = "model_catalog";

/**
 * The model catalog with prices. Reads come from an in-memory snapshot so the request path never
 * queries the database; the snapshot is reloaded after each write made here, on every other
 * replica at once (a write NOTIFYs CATALOG_CHANNEL, which the coordinator LISTENs to), and every 10
 * seconds as the backstop.
 */
export class ModelCatalog {
  private snapshot: ReadonlyMap<string, CatalogModel> | undefined;
  /** Refreshes may overlap: only a load newer than the applied one replaces the snapshot. */
  private loadsStarted = 0;
  private loadApplied = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly refreshIntervalMs: number;

  constructor(
    private readonly pool: pg.Pool,
    private readonly options: ModelCatalogOptions = {},
  ) {
    this.refreshIntervalMs = options.refreshIntervalMs ?? 10_000;
  }

  /** Loads the snapshot and starts the periodic refresh. */
  async start(): Promise<void> {
    await this.refresh();
    this.timer ??= setInterval(() => {
      this.refresh().catch((error: Error) =>
        this.options.logger?.warn(
          { err: error.message },
          "could not refresh the model catalog; keeping the last one",
        ),
      );
    }, this.refreshIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Every model, enabled or not, sorted by id. */
  list(): CatalogModel[] {
    return [...this.current().values()];
  }

  /** The model with this id, enabled or not; undefined when the catalog has none. */
  get(id: string): CatalogModel | undefined {
    return this.current().get(id);
  }

  /**
   * Adds a model or replaces its names, prices, state and embedding dimensions (its creation time
   * and vocabulary are kept).
   */
  async upsert(input: CatalogModelInput): Promise<CatalogModel> {
    const model = validate(input);
    const { rows } = await this.pool.query<ModelRow>(
      `INSERT INTO models (id, display_name, owned_by, input_micro_usd_per_million, output_micro_usd_per_million,
         enabled, embedding_min_dimensions)
       VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (id) DO UPDATE SET
         display_name = EXCLUDED.display_name, owned_by = EXCLUDED.owned_by,
         input_micro_usd_per_million = EXCLUDED.input_micro_usd_per_million,
         output_micro_usd_per_million = EXCLUDED.output_micro_usd_per_million,
         enabled = EXCLUDED.enabled, embedding_min_dimensions = EXCLUDED.embedding_min_dimensions,
         updated_at = now()
       RETURNING ${COLUMNS}`,
      [
        model.id,
        model.displayName,
        model.ownedBy,
        model.inputMicroUsdPerMillion.toString(),
        model.outputMicroUsdPerMillion.toString(),
        model.enabled,
        model.embeddingMinDimensions ?? null,
      ],
    );
    await this.written();
    return toModel(rows[0]!);
  }

  /** Removes a model from the catalog. */
  async delete(id: string): Promise<void> {
    const { rowCount } = await this.pool.query("DELETE FROM models WHERE id = $1", [id]);
    if (rowCount === 0) throw new ModelNotFoundError(id);
    await this.written();
  }

  /** A write was made: this replica reloads, and tells the others (best effort: they also poll). */
  private async written(): Promise<void> {
    await this.pool.query("SELECT pg_notify($1, '')", [CATALOG_CHANNEL]).catch(() => undefined);
    await this.refresh();
  }

  /** Reloads the snapshot from the database now. */
  async refresh(): Promise<void> {
    const load = ++this.loadsStarted;
    const { rows } = await this.pool.query<ModelRow>(`SELECT ${COLUMNS} FROM models ORDER BY id COLLATE "C"`);
    if (load < this.loadApplied) return;
    this.loadApplied = load;
    this.snapshot = new Map(rows.map((row) => [row.id, toModel(row)]));
    await this.options.onRefresh?.(this.list());
  }

  /**
   * Gives a model the vocabulary stored under `sha256` (vocabulary-store.ts), or none (undefined):
   * from then on its usage is counted, or only bounded.
   */
  async setTokenizer(id: string, sha256: string | undefined): Promise<CatalogModel> {
    const { rows } = await this.pool.query<ModelRow>(
      `UPDATE models SET tokenizer_sha256 = $2, updated_at = now() WHERE id = $1 RETURNING ${COLUMNS}`,
      [id, sha256 ?? null],
    );
    if (rows.length === 0) throw new ModelNotFoundError(id);
    await this.written();
    return toModel(rows[0]!);
  }

  private current(): ReadonlyMap<string, CatalogModel> {
    if (this.snapshot === undefined) throw new Error("the model catalog is not started");
    return this.snapshot;
  }
}

function validate(input: CatalogModelInput): Required<Omit<CatalogModelInput, "embeddingMinDimensions">> & {
  embeddingMinDimensions: number | undefined;
} {
  const min = input.embeddingMinDimensions;
  if (min !== undefined && (!Number.isInteger(min) || min < 1 || min > MAX_EMBEDDING_DIMENSIONS)) {
    throw new InvalidArgumentError(
      "embedding_min_dimensions",
      `embedding_min_dimensions must be an integer from 1 to ${MAX_EMBEDDING_DIMENSIONS}`,
    );
  }
  if (typeof input.id !== "string" || !MODEL_ID_PATTERN.test(input.id)) {
    throw new InvalidArgumentError("id", "model id must be 1 to 128 characters of A-Z a-z 0-9 . _ : / -");
  }
  for (const [field, value] of [
    ["display_name", input.displayName],
    ["owned_by", input.ownedBy],
  ] as const) {
    if (value !== undefined && value.length > MAX_TEXT_LENGTH) {
      throw new InvalidArgumentError(field, `${field} must be at most ${MAX_TEXT_LENGTH} characters`);
    }
  }
  for (const [field, value] of [
    ["input_micro_usd_per_million", input.inputMicroUsdPerMillion],
    ["output_micro_usd_per_million", input.outputMicroUsdPerMillion],
  ] as const) {
    if (typeof value !== "bigint" || value < 0n || value > MAX_INT64) {
      throw new InvalidArgumentError(field, `${field} must be an integer of at least 0`);
    }
  }
  return {
    id: input.id,
    displayName: input.displayName?.trim() || input.id,
    ownedBy: input.ownedBy?.trim() ?? "",
    inputMicroUsdPerMillion: input.inputMicroUsdPerMillion,
    outputMicroUsdPerMillion: input.outputMicroUsdPerMillion,
    enabled: input.enabled ?? true,
    embeddingMinDimensions: min,
  };
}

function toModel(row: ModelRow): CatalogModel {
  return {
    id: row.id,
    displayName: row.display_name,
    ownedBy: row.owned_by,
    inputMicroUsdPerMillion: BigInt(row.input),
    outputMicroUsdPerMillion: BigInt(row.output),
    enabled: row.enabled,
    vocabularySha256: row.tokenizer_sha256 ?? undefined,
    embeddingMinDimensions: row.embedding_min_dimensions ?? undefined,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}
