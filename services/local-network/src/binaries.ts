import { createRequire } from "node:module";
import { createServer } from "node:net";
import { dirname, join } from "node:path";

const require = createRequire(import.meta.url);

/** The coordinator's CLI (`darkbloom-coordinator`), as built in its package. */
export const coordinatorBin = join(
  dirname(require.resolve("@darkbloom/coordinator/package.json")),
  "dist/bin/darkbloom-coordinator.js",
);

/** The provider daemon's CLI (`darkbloom`), as built in its package. */
export const providerBin = join(
  dirname(require.resolve("@darkbloom/provider/package.json")),
  "dist/bin/darkbloom.js",
);

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolvePort(port));
    });
  });
}
