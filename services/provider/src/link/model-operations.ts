import { LoadModelState } from "@darkbloom/protocol/provider/v1";
import { loadStatusMessage } from "@darkbloom/protocol/provider-client";
import type { Logger } from "pino";
import type { Engine, ModelFile } from "../engine/engine.js";
import type { Session } from "./session.js";

/**
 * The coordinator's LoadModel and UnloadModel commands, and the reload a request needs for a model
 * the coordinator unloaded: the engine loads a registered model on first use by itself, but one
 * unloaded on command stays unloaded until a request or a LoadModel asks for it again.
 */
export class ModelOperations {
  /** Models unloaded by an UnloadModel command; a request for one loads it again first. */
  private readonly unloaded = new Set<string>();

  constructor(
    private readonly engine: Engine,
    private readonly served: ReadonlyMap<string, ModelFile>,
    private readonly log: Logger,
    /** The loaded models changed: the link sends a heartbeat at once. */
    private readonly onChanged: (session: Session) => void,
  ) {}

  /**
   * Loads or unloads a model, reporting STARTED then SUCCEEDED or FAILED (with the reason) for the
   * operation. Models this provider did not register are refused.
   */
  async run(session: Session, kind: "load" | "unload", operationId: string, modelId: string): Promise<void> {
    const send = (state: LoadModelState, reason = "") => {
      if (!session.ended) session.outbound.send(loadStatusMessage(operationId, modelId, state, reason));
    };
    send(LoadModelState.STARTED);
    const model = this.served.get(modelId);
    if (!model) {
      send(LoadModelState.FAILED, `model ${JSON.stringify(modelId)} is not served by this provider`);
      return;
    }
    const started = performance.now();
    try {
      if (kind === "load") await this.engine.load(model);
      else await this.engine.unload(modelId);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      this.log.warn({ operationId, model: modelId, kind, reason }, "model operation failed");
      send(LoadModelState.FAILED, reason || `${kind} failed`);
      return;
    }
    this.log.info(
      { operationId, model: modelId, kind, ms: Math.round(performance.now() - started) },
      "model operation done",
    );
    if (kind === "load") this.unloaded.delete(modelId);
    else this.unloaded.add(modelId);
    send(LoadModelState.SUCCEEDED);
    if (session.ack && !session.ended) this.onChanged(session);
  }

  /**
   * Loads `model` again when the coordinator unloaded it, before a request for it runs; undefined
   * when there is nothing to load.
   */
  reloadIfUnloaded(model: string): Promise<void> | undefined {
    const file = this.served.get(model);
    if (!file || !this.unloaded.has(model)) return undefined;
    return this.engine.load(file).then(() => {
      this.unloaded.delete(model);
    });
  }
}
