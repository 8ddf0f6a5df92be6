/**
 * ApiError is every error the consumer API answers with. It renders as OpenAI's error shape
 * `{"error":{"message","type","code","param"}}`, where `code` defaults to `type`.
 */
export class ApiError extends Error {
  readonly status: number;
  readonly type: string;
  readonly code: string;
  readonly param: string | null;
  /** Extra response headers, e.g. Retry-After. */
  readonly headers: Readonly<Record<string, string>>;

  constructor(init: {
    status: number;
    type: string;
    message: string;
    code?: string;
    param?: string | null;
    headers?: Record<string, string>;
  }) {
    super(init.message);
    this.name = "ApiError";
    this.status = init.status;
    this.type = init.type;
    this.code = init.code ?? init.type;
    this.param = init.param ?? null;
    this.headers = init.headers ?? {};
  }

  toJSON(): { error: { message: string; type: string; code: string; param: string | null } } {
    return { error: { message: this.message, type: this.type, code: this.code, param: this.param } };
  }
}

export function isApiError(e: unknown): e is ApiError {
  return e instanceof ApiError;
}
