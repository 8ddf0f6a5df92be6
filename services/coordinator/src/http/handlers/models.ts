import type { Authenticator } from "../../auth/authenticator.js";
import type { ClusterProviders } from "../../cluster/cluster-view.js";
import { isApiError, unexpectedError } from "../../errors/index.js";
import { type CatalogListing, listModels } from "../../inference/model-list.js";
import { newRequestId } from "../request-id.js";
import { sendError, sendJson } from "../respond.js";
import type { Handler } from "../types.js";

/** GET /v1/models in OpenAI's list shape. */
export function modelsHandler(
  auth: Authenticator,
  providers: ClusterProviders,
  catalog: CatalogListing,
): Handler {
  return async (req, res) => {
    const headers = { "X-Request-ID": newRequestId() };
    try {
      await auth.authenticateRequest(req);
      const data = listModels(providers, catalog).map((m) => ({
        id: m.id,
        object: "model",
        created: m.created,
        owned_by: m.ownedBy,
      }));
      sendJson(res, 200, { object: "list", data }, headers);
    } catch (e) {
      sendError(res, isApiError(e) ? e : unexpectedError(e), headers);
    }
  };
}
