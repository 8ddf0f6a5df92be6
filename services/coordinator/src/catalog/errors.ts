import { NotFoundError } from "../store/errors.js";

/** The model is not in the catalog. */
export class ModelNotFoundError extends NotFoundError {
  override readonly name = "ModelNotFoundError";

  constructor(readonly modelId: string) {
    super(`model ${modelId} is not in the catalog`);
  }
}
