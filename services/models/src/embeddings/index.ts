// Embeddings (POST /v1/embeddings): the request as both sides read it, and what makes a GGUF an
// embedding model.
export {
  type EmbeddingModel,
  type EmbeddingPooling,
  embeddingModelOf,
  POOLING_TYPE,
} from "./embedding-model.js";
export {
  type EmbeddingEncoding,
  type EmbeddingsRequest,
  MAX_EMBEDDING_INPUT_TOKENS,
  MAX_EMBEDDING_INPUTS,
  readEmbeddingsRequest,
} from "./embeddings-request.js";
