// What the workspace bins (`darkbloom`, `darkbloom-coordinator`, `darkbloom-local`) run. npm links a
// bin when it installs, before anything is built, and skips one whose file does not exist yet; so
// each package's bin is a small committed file (bin/<name>.js) that hands over to its built CLI in
// dist/ through launch(). Plain JavaScript, outside src/: it must work before the first build.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

/**
 * Runs the built CLI at `entry` (a file: URL of dist/bin/<name>.js). When it has not been built, says
 * so in one line and how to build it, and exits 1.
 */
export async function launch(name, entry) {
  if (!existsSync(fileURLToPath(entry))) {
    process.stderr.write(
      `${name}: not built yet (${fileURLToPath(entry)} is missing): run \`npm run build\` at the ` +
        "repository root (`npm install` builds too, unless its scripts were skipped; after deleting " +
        "dist/ by hand, `npm run clean` first)\n",
    );
    process.exit(1);
  }
  await import(entry.href);
}
