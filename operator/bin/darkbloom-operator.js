#!/usr/bin/env node
// The `darkbloom-operator` command npm links: it runs the built CLI, dist/bin/darkbloom-operator.js (see the CLI kit's launcher).
import { launch } from "@darkbloom/cli-kit/launcher";

await launch("darkbloom-operator", new URL("../dist/bin/darkbloom-operator.js", import.meta.url));
