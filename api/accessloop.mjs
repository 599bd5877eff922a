#!/usr/bin/env node
// `npx accessloop …` (package.json "bin"): the operator CLI in api/cli.ts. After `npm run build`
// it runs the compiled dist/api/cli.js (plain node, no TypeScript loader at start); in a
// checkout that was never built it runs the source through tsx. A dist/ left over from an older
// build runs that older code: rebuild, or delete dist/, after changing the CLI.
// ACCESSLOOP_CLI_FROM_SOURCE=1 always runs the source (the test suite sets it).
import { existsSync } from 'node:fs';

const compiled = new URL('../dist/api/cli.js', import.meta.url);
const { main } = existsSync(compiled) && process.env.ACCESSLOOP_CLI_FROM_SOURCE !== '1'
  ? await import(compiled.href)
  : await import('tsx/esm/api').then(({ tsImport }) => tsImport('./cli.ts', import.meta.url));
process.exitCode = await main(process.argv.slice(2));
