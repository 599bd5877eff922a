#!/usr/bin/env node
// `npx accessloop …` (package.json "bin"): the operator CLI in api/cli.ts, run through tsx
// because the project runs its TypeScript without a build step.
import { tsImport } from 'tsx/esm/api';

const { main } = await tsImport('./cli.ts', import.meta.url);
process.exitCode = await main(process.argv.slice(2));
