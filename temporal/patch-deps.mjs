#!/usr/bin/env node
// `postinstall`: a guarded fix to postgres.js (3.4.9, the newest release) until upstream ships one.
//
// Its deferred socket write (`nextWrite`) runs after the connection may have closed, and then
// throws `TypeError: Cannot read properties of null (reading 'write')` from a setImmediate or a
// direct call, where nothing can catch it: a PostgreSQL restart kills the worker process
// (porsager/postgres#1154, #1066, #1208; fixes proposed in #1168, #1176, #1209, none released).
// The fix fails the in-flight queries with CONNECTION_CLOSED instead (as #1209 does), which our
// activities classify as a retryable database outage.
//
// Idempotent; refuses loudly if the driver's code no longer looks as expected, so an upgrade that
// changes it is noticed instead of silently running unpatched.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const MARK = 'accessloop: closed-socket guard';
const ORIGINAL = `  function nextWrite(fn) {
    const x = socket.write(chunk, fn)`;
const PATCHED = `  function nextWrite(fn) {
    if (!socket) { // ${MARK}
      chunk = nextWriteTimer = null
      error(Errors.connection('CONNECTION_CLOSED', options, socket))
      return false
    }
    const x = socket.write(chunk, fn)`;

const require = createRequire(import.meta.url);
let root;
try {
  // The package's export map hides package.json: start from its entry point and walk up.
  root = path.dirname(require.resolve('postgres'));
  while (!existsSync(path.join(root, 'package.json')) || JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).name !== 'postgres') {
    const up = path.dirname(root);
    if (up === root) throw new Error('postgres package root not found');
    root = up;
  }
} catch {
  process.exit(0); // not installed (e.g. a partial install): nothing to patch
}
const { version } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));

for (const rel of ['src/connection.js', 'cjs/src/connection.js']) {
  const file = path.join(root, rel);
  if (!existsSync(file)) continue;
  const text = readFileSync(file, 'utf8');
  if (text.includes(MARK)) continue;
  if (!text.includes(ORIGINAL)) {
    if (text.includes('if (!socket')) continue; // upstream guards it itself now
    console.error(`[patch-deps] postgres ${version}: ${rel} no longer matches the code this guard was written for; review temporal/patch-deps.mjs`);
    process.exit(1);
  }
  writeFileSync(file, text.replace(ORIGINAL, PATCHED));
  console.log(`[patch-deps] postgres ${version}: guarded nextWrite in ${rel}`);
}
