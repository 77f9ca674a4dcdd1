#!/usr/bin/env node
// The `hermetic` command. Runs the compiled CLI (built by `npm install` / `npm run build`).
import { existsSync } from 'node:fs';

const cli = new URL('../dist/server/cli.js', import.meta.url);
if (!existsSync(cli)) {
  console.error('hermetic: the build is missing; run `npm run build` first');
  process.exit(1);
}
await import(cli.href);
