#!/usr/bin/env node
// The `darkbloom-coordinator` command npm links: it runs the built CLI, dist/bin/darkbloom-coordinator.js (see the CLI kit's launcher).
import { launch } from "@darkbloom/cli-kit/launcher";

await launch("darkbloom-coordinator", new URL("../dist/bin/darkbloom-coordinator.js", import.meta.url));
