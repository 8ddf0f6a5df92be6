#!/usr/bin/env node
import { processIo } from "@darkbloom/cli-kit";
import { runCli } from "../cli/program.js";

process.exit(await runCli(process.argv.slice(2), processIo("darkbloom-operator")));
