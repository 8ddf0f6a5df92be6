import { AlreadyExistsError, NotFoundError } from "../store/errors.js";

export { InvalidArgumentError } from "../store/errors.js";

/** The account does not exist. */
export class AccountNotFoundError extends NotFoundError {
  override readonly name = "AccountNotFoundError";

  constructor(readonly accountId: string) {
    super(`account ${accountId} does not exist`);
  }
}

/** The API key does not exist. */
export class ApiKeyNotFoundError extends NotFoundError {
  override readonly name = "ApiKeyNotFoundError";

  constructor(readonly keyId: string) {
    super(`API key ${keyId} does not exist`);
  }
}

/** An idempotency key was used before for a different movement of money. */
export class IdempotencyKeyReusedError extends AlreadyExistsError {
  override readonly name = "IdempotencyKeyReusedError";

  constructor(readonly idempotencyKey: string) {
    super(`idempotency key "${idempotencyKey}" was already used for a different credit`);
  }
}

/** No (enabled) account has the referral code. */
export class ReferralCodeNotFoundError extends NotFoundError {
  override readonly name = "ReferralCodeNotFoundError";

  constructor() {
    super("no account has this referral code");
  }
}
