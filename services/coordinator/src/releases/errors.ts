import { AlreadyExistsError, NotFoundError } from "../store/errors.js";

/** No release has this version and platform. */
export class ReleaseNotFoundError extends NotFoundError {
  override readonly name = "ReleaseNotFoundError";

  constructor(
    readonly version: string,
    readonly platform: string,
  ) {
    super(`release ${version} for ${platform} does not exist`);
  }
}

/** A release with this version and platform is registered already. */
export class ReleaseAlreadyExistsError extends AlreadyExistsError {
  override readonly name = "ReleaseAlreadyExistsError";

  constructor(
    readonly version: string,
    readonly platform: string,
  ) {
    super(`release ${version} for ${platform} already exists`);
  }
}
