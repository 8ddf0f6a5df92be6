export { ApiError, isApiError } from "./api-error.js";
export * from "./errors.js";
