import { resolveTemporalBinary } from './dev-server.js';

// Resolves (and on first run builds) the Temporal CLI so the build's progress is visible
// before any server starts.
const bin = await resolveTemporalBinary({ cliPath: process.env.TEMPORAL_CLI_PATH, say: (m) => console.log(`[setup] ${m}`) });
if (process.env.CI) console.log(`[setup] temporal CLI: ${bin}`);
