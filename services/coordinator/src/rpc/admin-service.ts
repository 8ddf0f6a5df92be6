import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { AdminService } from "@darkbloom/protocol/admin/v1";
import type pg from "pg";
import type { Logger } from "pino";
import {
  type Account,
  type AccountStore,
  type ApiKeyRecord,
  DEFAULT_PAGE_SIZE,
  MAX_PAGE_SIZE,
} from "../accounts/account-store.js";
import { constantTimeEqual } from "../accounts/api-key.js";
import type { Invite, InviteStore } from "../accounts/invites.js";
import type { UsageRecord, UsageStore } from "../accounts/usage.js";
import type { FailedAuthLimiter } from "../auth/failed-auth-limiter.js";
import { verifyLedger } from "../billing/ledger-verify.js";
import type { CatalogModel, ModelCatalog } from "../catalog/model-catalog.js";
import type { VocabularyStore } from "../catalog/vocabulary-store.js";
import { isApiError } from "../errors/index.js";
import { CLIENT_ADDRESS } from "../http/client-address.js";
import type { Release, ReleaseStore } from "../releases/release-store.js";
import { AlreadyExistsError, InvalidArgumentError, NotFoundError } from "../store/errors.js";
import type { KeyQuarantine, KeyQuarantineStore, QuarantineLift } from "../trust/key-quarantine.js";
import type { MachineBinding, MachineBindingStore, MachineRebind } from "../trust/machine-bindings.js";
import { toConnectError as toApiConnectError } from "./api-error-to-connect.js";
import type { ProviderDirectory } from "./provider-directory.js";

export interface AdminServiceDeps {
  accounts: AccountStore;
  catalog: ModelCatalog;
  vocabularies: VocabularyStore;
  releases: ReleaseStore;
  invites: InviteStore;
  usage: UsageStore;
  providers: ProviderDirectory;
  /** Which signing key each machine id belongs to. */
  bindings: MachineBindingStore;
  /**
   * Called after a machine id was re-bound to the key `keyHex`: disconnects this coordinator's sessions
   * of that machine id with another key and returns how many.
   */
  onMachineRebound?: (machineId: string, keyHex: string) => number;
  /** Quarantined signing keys. */
  quarantines: KeyQuarantineStore;
  /** Called after the quarantine of the signing key `keyHex` was lifted, so this coordinator forgets it. */
  onQuarantineLifted?: (keyHex: string) => void;
  /** The database, for whole-ledger checks. */
  pool: pg.Pool;
  /** The bearer token every call must carry. */
  adminKey: string;
  /** Wrong admin keys count as failed authentication of the caller's address (429 past the burst). */
  authFailures: FailedAuthLimiter;
  /** Called after a key was revoked, so caches of key lookups can be dropped. */
  onKeysChanged?: () => void;
  /** Called after a release was created or (de)activated, so the connected fleet is re-checked. */
  onReleasesChanged?: () => Promise<void>;
  /** Where unexpected failures are logged (their details never reach the caller). */
  logger?: Logger;
}

/** The AdminService implementation: every RPC needs `Authorization: Bearer <admin key>`. */
export function createAdminService(deps: AdminServiceDeps): ServiceImpl<typeof AdminService> {
  if (deps.adminKey.trim() === "") throw new Error("the admin service needs a non-empty admin key");
  const { accounts, catalog, releases, providers, invites, usage, bindings, quarantines } = deps;
  const guard = <I, O>(handler: (request: I) => Promise<O>) => guarded(deps, handler);
  /** Has a provider load or unload a model; the provider's refusal is FailedPrecondition with its reason. */
  const modelOperation = async (providerIdIn: string, modelIdIn: string, kind: "load" | "unload") => {
    const providerId = required("provider_id", providerIdIn);
    const modelId = required("model_id", modelIdIn);
    const outcome = await providers.modelOperation(providerId, modelId, kind);
    if (outcome === undefined)
      throw new ConnectError(`provider ${providerId} is not connected`, Code.NotFound);
    if (!outcome.succeeded) {
      throw new ConnectError(
        `provider ${providerId} could not ${kind} ${modelId}: ${outcome.reason}`,
        Code.FailedPrecondition,
      );
    }
  };

  return {
    createAccount: guard(async (request) => {
      const created = await accounts.createAccount({
        name: request.name,
        initialCreditMicroUsd: request.initialCreditMicroUsd,
        referrerCode: request.referrerCode,
      });
      return {
        account: account(created.account),
        apiKey: apiKey(created.apiKey),
        apiKeySecret: created.secret,
      };
    }),
    getAccount: guard(async (request) => ({
      account: account(await accounts.getAccount(required("account_id", request.accountId))),
    })),
    listAccounts: guard(async (request) => {
      const page = await accounts.listAccounts({ pageSize: request.pageSize, pageToken: request.pageToken });
      return { accounts: page.accounts.map(account), nextPageToken: page.nextPageToken };
    }),
    createApiKey: guard(async (request) => {
      const issued = await accounts.createApiKey(required("account_id", request.accountId), request.name);
      return { apiKey: apiKey(issued.apiKey), apiKeySecret: issued.secret };
    }),
    listApiKeys: guard(async (request) => ({
      apiKeys: (await accounts.listApiKeys(required("account_id", request.accountId))).map(apiKey),
    })),
    revokeApiKey: guard(async (request) => {
      const revoked = await accounts.revokeApiKey(required("api_key_id", request.apiKeyId));
      deps.onKeysChanged?.();
      return { apiKey: apiKey(revoked) };
    }),
    creditAccount: guard(async (request) => {
      const result = await accounts.credit({
        accountId: required("account_id", request.accountId),
        amountMicroUsd: request.amountMicroUsd,
        idempotencyKey: request.idempotencyKey,
        note: request.note,
      });
      return { account: account(result.account), applied: result.applied };
    }),
    listModels: guard(async () => ({ models: catalog.list().map(model) })),
    upsertModel: guard(async (request) => {
      if (!request.model) throw new InvalidArgumentError("model", "model is required");
      const { id, displayName, ownedBy, inputMicroUsdPerMillion, outputMicroUsdPerMillion, enabled } =
        request.model;
      const min = request.model.embeddingMinDimensions;
      const stored = await catalog.upsert({
        id,
        displayName,
        ownedBy,
        inputMicroUsdPerMillion,
        outputMicroUsdPerMillion,
        enabled,
        embeddingMinDimensions: min === 0 ? undefined : min,
      });
      return { model: model(stored) };
    }),
    deleteModel: guard(async (request) => {
      await catalog.delete(required("model_id", request.modelId));
      return {};
    }),
    uploadModelVocabulary: guard(async (request) => {
      const state = await deps.vocabularies.upload({
        modelId: required("model_id", request.modelId),
        sha256: request.sha256,
        sizeBytes: Number(request.sizeBytes),
        offset: Number(request.offset),
        data: request.data,
      });
      return {
        receivedBytes: BigInt(state.receivedBytes),
        ...(state.model ? { model: model(state.model) } : {}),
      };
    }),
    clearModelVocabulary: guard(async (request) => ({
      model: model(await deps.vocabularies.clear(required("model_id", request.modelId))),
    })),
    listProviders: guard(async (request) => ({ providers: providers.list(request.model || undefined) })),
    drainProvider: guard(async (request) => {
      const providerId = required("provider_id", request.providerId);
      if (!(await providers.drain(providerId, request.reason || "drained by an administrator"))) {
        throw new ConnectError(`provider ${providerId} is not connected`, Code.NotFound);
      }
      return {};
    }),
    loadProviderModel: guard(async (request) => {
      await modelOperation(request.providerId, request.modelId, "load");
      return {};
    }),
    unloadProviderModel: guard(async (request) => {
      await modelOperation(request.providerId, request.modelId, "unload");
      return {};
    }),
    createRelease: guard(async (request) => {
      if (!request.release) throw new InvalidArgumentError("release", "release is required");
      const { version, platform, binarySha256, bundleSha256, url, active, minProviderVersion } =
        request.release;
      const created = await releases.create({
        version,
        platform,
        binarySha256,
        bundleSha256,
        url,
        active,
        minProviderVersion,
      });
      await deps.onReleasesChanged?.();
      return { release: release(created) };
    }),
    listReleases: guard(async (request) => ({
      releases: (await releases.list({ platform: request.platform })).map(release),
    })),
    verifyLedger: guard(async () => {
      const report = await verifyLedger(deps.pool);
      return {
        ok: report.ok,
        transactions: BigInt(report.transactions),
        entries: BigInt(report.entries),
        accounts: BigInt(report.accounts),
        openReservations: BigInt(report.openReservations),
        discrepancies: report.discrepancies,
      };
    }),
    createInvite: guard(async (request) => {
      const created = await invites.create({
        creditMicroUsd: request.creditMicroUsd,
        maxUses: request.maxUses,
        expiresAt: request.expiresAt ? timestampDate(request.expiresAt) : undefined,
        code: request.code,
        note: request.note,
      });
      return { invite: invite(created.invite), code: created.code };
    }),
    listInvites: guard(async (request) => {
      const page = await invites.list({ pageSize: request.pageSize, pageToken: request.pageToken });
      return { invites: page.invites.map(invite), nextPageToken: page.nextPageToken };
    }),
    revokeInvite: guard(async (request) => ({
      invite: invite(await invites.revoke(required("invite_id", request.inviteId))),
    })),
    listUsage: guard(async (request) => {
      const accountId = required("account_id", request.accountId);
      const money = await usage.summary(accountId);
      const limit = Math.min(request.pageSize || DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
      const page = await usage.usage(accountId, {
        limit,
        before: request.pageToken || undefined,
        cursorField: "page_token",
      });
      return {
        accountId,
        creditedMicroUsd: money.creditedMicroUsd,
        earnedMicroUsd: money.earnedMicroUsd,
        heldMicroUsd: money.heldMicroUsd,
        records: page.records.map(usageRecord),
        nextPageToken: page.hasMore ? (page.records.at(-1)?.requestId ?? "") : "",
      };
    }),
    getMachineBinding: guard(async (request) => {
      const machineId = required("machine_id", request.machineId);
      const binding = await bindings.require(machineId);
      const quarantine = await quarantines.get(Buffer.from(binding.publicKey).toString("hex"));
      return {
        binding: machineBinding(binding),
        rebinds: (await bindings.rebinds(machineId)).map(machineRebind),
        ...(quarantine ? { quarantine: keyQuarantine(quarantine) } : {}),
      };
    }),
    rebindMachine: guard(async (request) => {
      const changed = await bindings.rebind({
        machineId: required("machine_id", request.machineId),
        publicKey: request.publicKey,
        reason: required("reason", request.reason),
        actor: required("actor", request.actor),
      });
      const keyHex = Buffer.from(changed.binding.publicKey).toString("hex");
      const disconnected = deps.onMachineRebound?.(changed.binding.machineId, keyHex) ?? 0;
      deps.logger?.warn(
        { machineId: changed.binding.machineId, actor: changed.rebind.actor, disconnected },
        "machine id re-bound to another signing key by an administrator",
      );
      return {
        binding: machineBinding(changed.binding),
        rebind: machineRebind(changed.rebind),
        disconnectedSessions: disconnected,
      };
    }),
    liftKeyQuarantine: guard(async (request) => {
      const lifted = await quarantines.lift({
        keyHex: Buffer.from(request.publicKey).toString("hex"),
        reason: required("reason", request.reason),
        actor: required("actor", request.actor),
      });
      deps.onQuarantineLifted?.(lifted.lift.keyHex);
      deps.logger?.warn(
        { code: lifted.lift.code, actor: lifted.lift.actor },
        "signing key quarantine lifted by an administrator",
      );
      return { lifted: keyQuarantine(lifted.quarantine), lift: quarantineLift(lifted.lift) };
    }),
    setReleaseActive: guard(async (request) => {
      const changed = await releases.setActive(
        required("version", request.version),
        required("platform", request.platform),
        request.active,
      );
      await deps.onReleasesChanged?.();
      return { release: release(changed) };
    }),
  };
}

function guarded<I, O>(
  deps: AdminServiceDeps,
  handler: (request: I) => Promise<O>,
): (request: I, context: HandlerContext) => Promise<O> {
  return async (request, context) => {
    authorize(context, deps.adminKey, deps.authFailures);
    try {
      return await handler(request);
    } catch (error) {
      throw toConnectError(error, context, deps.logger);
    }
  };
}

function authorize(context: HandlerContext, adminKey: string, failures: FailedAuthLimiter): void {
  const header = context.requestHeader.get("authorization");
  const match = header === null ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!match) {
    throw new ConnectError(
      "admin key required: send Authorization: Bearer <admin key>",
      Code.Unauthenticated,
    );
  }
  const address = context.values.get(CLIENT_ADDRESS);
  try {
    failures.take(address);
  } catch (e) {
    if (isApiError(e)) throw toApiConnectError(e);
    throw e;
  }
  if (!constantTimeEqual(match[1]!, adminKey))
    throw new ConnectError("invalid admin key", Code.Unauthenticated);
  failures.refund(address);
}

function toConnectError(error: unknown, context: HandlerContext, logger: Logger | undefined): ConnectError {
  if (error instanceof ConnectError) return error;
  if (error instanceof InvalidArgumentError) return new ConnectError(error.message, Code.InvalidArgument);
  if (error instanceof NotFoundError) return new ConnectError(error.message, Code.NotFound);
  if (error instanceof AlreadyExistsError) return new ConnectError(error.message, Code.AlreadyExists);
  logger?.error({ err: error, method: context.method.name }, "admin call failed");
  return new ConnectError("internal error", Code.Internal);
}

function required(field: string, value: string): string {
  if (value.trim() === "") throw new InvalidArgumentError(field, `${field} is required`);
  return value;
}

function account(value: Account) {
  return {
    id: value.id,
    name: value.name,
    balanceMicroUsd: value.balanceMicroUsd,
    createdAt: timestampFromDate(value.createdAt),
    disabled: value.disabled,
    referralCode: value.referralCode ?? "",
    referrerId: value.referrerId ?? "",
  };
}

function invite(value: Invite) {
  return {
    id: value.id,
    prefix: value.prefix,
    creditMicroUsd: value.creditMicroUsd,
    maxUses: value.maxUses,
    uses: value.uses,
    createdAt: timestampFromDate(value.createdAt),
    note: value.note,
    ...(value.expiresAt ? { expiresAt: timestampFromDate(value.expiresAt) } : {}),
    ...(value.revokedAt ? { revokedAt: timestampFromDate(value.revokedAt) } : {}),
  };
}

function usageRecord(value: UsageRecord) {
  return {
    requestId: value.requestId,
    model: value.model,
    promptTokens: value.promptTokens ?? 0,
    completionTokens: value.completionTokens ?? 0,
    reservedMicroUsd: value.reservedMicroUsd,
    chargedMicroUsd: value.chargedMicroUsd ?? 0n,
    outcome: value.outcome ?? "open",
    createdAt: timestampFromDate(value.createdAt),
    providerAccount: value.providerAccount ?? "",
    ...(value.settledAt ? { settledAt: timestampFromDate(value.settledAt) } : {}),
  };
}

function apiKey(value: ApiKeyRecord) {
  return {
    id: value.id,
    accountId: value.accountId,
    name: value.name,
    prefix: value.prefix,
    createdAt: timestampFromDate(value.createdAt),
    ...(value.revokedAt ? { revokedAt: timestampFromDate(value.revokedAt) } : {}),
  };
}

function model(value: CatalogModel) {
  return {
    id: value.id,
    displayName: value.displayName,
    ownedBy: value.ownedBy,
    inputMicroUsdPerMillion: value.inputMicroUsdPerMillion,
    outputMicroUsdPerMillion: value.outputMicroUsdPerMillion,
    enabled: value.enabled,
    createdAt: timestampFromDate(value.createdAt),
    vocabularySha256: value.vocabularySha256 ?? "",
    embeddingMinDimensions: value.embeddingMinDimensions ?? 0,
  };
}

function release(value: Release) {
  return {
    version: value.version,
    platform: value.platform,
    binarySha256: value.binarySha256,
    bundleSha256: value.bundleSha256,
    url: value.url,
    active: value.active,
    minProviderVersion: value.minProviderVersion,
    createdAt: timestampFromDate(value.createdAt),
  };
}

function machineBinding(value: MachineBinding) {
  return {
    machineId: value.machineId,
    publicKey: value.publicKey,
    firstAttestedAt: timestampFromDate(value.firstAttestedAt),
    lastSeenAt: timestampFromDate(value.lastSeenAt),
  };
}

function machineRebind(value: MachineRebind) {
  return {
    id: value.id,
    machineId: value.machineId,
    oldPublicKey: value.oldPublicKey ?? new Uint8Array(),
    newPublicKey: value.newPublicKey,
    reason: value.reason,
    actor: value.actor,
    reboundAt: timestampFromDate(value.reboundAt),
  };
}

function keyQuarantine(value: KeyQuarantine) {
  return {
    publicKey: new Uint8Array(Buffer.from(value.keyHex, "hex")),
    code: value.code,
    message: value.message,
    until: timestampFromDate(value.until),
    createdAt: timestampFromDate(value.createdAt),
  };
}

function quarantineLift(value: QuarantineLift) {
  return {
    id: value.id,
    publicKey: new Uint8Array(Buffer.from(value.keyHex, "hex")),
    code: value.code,
    message: value.message,
    until: timestampFromDate(value.until),
    reason: value.reason,
    actor: value.actor,
    liftedAt: timestampFromDate(value.liftedAt),
  };
}
