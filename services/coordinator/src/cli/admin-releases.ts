import { ListReleasesResponseSchema, type Release, ReleaseSchema } from "@darkbloom/protocol/admin/v1";
import type { Command } from "commander";
import { type AdminCommands, protoJson } from "./admin-call.js";
import { table, time } from "./format.js";
import { httpUrl } from "./parse.js";

/** `admin releases …`: provider daemon releases, whose active ones make the binary allowlist. */
export function addReleaseCommands(admin: Command, cli: AdminCommands): void {
  const releases = cli.group(admin, "releases", "provider daemon releases (the binary allowlist)");
  cli
    .command(releases, "create", "register a release (active unless --inactive)", async (call) => {
      const { release } = await call.client.createRelease({
        release: {
          version: call.opts.version as string,
          platform: call.opts.platform as string,
          binarySha256: call.opts.binarySha256 as string,
          bundleSha256: call.opts.bundleSha256 as string,
          url: call.opts.bundleUrl as string,
          active: call.opts.inactive !== true,
          minProviderVersion: (call.opts.minProviderVersion as string | undefined) ?? "",
        },
      });
      call.print(
        () => protoJson(ReleaseSchema, release),
        () => (release ? releaseLine("registered", release) : ""),
      );
    })
    .requiredOption("--version <semver>", "release version, e.g. 0.5.1")
    .requiredOption("--platform <platform>", "build target, e.g. darwin-arm64 or linux-x64")
    .requiredOption("--binary-sha256 <hex>", "SHA-256 of the daemon binary")
    .requiredOption("--bundle-sha256 <hex>", "SHA-256 of the download bundle")
    .requiredOption("--bundle-url <url>", "where the bundle is downloaded from", httpUrl)
    .option("--inactive", "register without adding it to the allowlist")
    .option(
      "--min-provider-version <semver>",
      "while this release is active, daemons older than this are not routed to",
    );
  cli
    .command(releases, "list", "list releases, newest first", async (call) => {
      const response = await call.client.listReleases({
        platform: (call.opts.platform as string | undefined) ?? "",
      });
      call.print(
        () => protoJson(ListReleasesResponseSchema, response),
        () =>
          table(
            ["VERSION", "PLATFORM", "ACTIVE", "BINARY SHA-256", "CREATED", "URL"],
            response.releases.map((release) => [
              release.version,
              release.platform,
              release.active ? "yes" : "no",
              release.binarySha256,
              time(release.createdAt),
              release.url,
            ]),
          ),
      );
    })
    .option("--platform <platform>", "only this platform");
  for (const [name, active] of [
    ["activate", true],
    ["deactivate", false],
  ] as const) {
    cli
      .command(
        releases,
        name,
        `${active ? "add a release to" : "remove a release from"} the allowlist`,
        async (call) => {
          const { release } = await call.client.setReleaseActive({
            version: call.args[0] as string,
            platform: call.args[1] as string,
            active,
          });
          call.print(
            () => protoJson(ReleaseSchema, release),
            () => (release ? releaseLine(active ? "activated" : "deactivated", release) : ""),
          );
        },
      )
      .argument("<version>")
      .argument("<platform>");
  }
}

function releaseLine(verb: string, release: Release): string {
  return `${verb} ${release.version} for ${release.platform} (${release.active ? "active" : "inactive"}, binary ${release.binarySha256.slice(0, 12)}…)\n`;
}
