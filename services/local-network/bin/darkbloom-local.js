#!/usr/bin/env node
// The `darkbloom-local` command npm links: it runs the built CLI, dist/bin/darkbloom-local.js (see the CLI kit's launcher).
import { launch } from "@darkbloom/cli-kit/launcher";

await launch("darkbloom-local", new URL("../dist/bin/darkbloom-local.js", import.meta.url));
