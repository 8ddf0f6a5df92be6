#!/usr/bin/env node
// The `darkbloom` command npm links: it runs the built CLI, dist/bin/darkbloom.js (see the CLI kit's launcher).
import { launch } from "@darkbloom/cli-kit/launcher";

await launch("darkbloom", new URL("../dist/bin/darkbloom.js", import.meta.url));
