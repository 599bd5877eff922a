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
//
// test/integration/postgres-closed-socket.test.ts imports the texts below to run a reproduction
// against an unpatched copy (the crash is real) and against the installed driver (the guard holds).
import { readFileSync, writeFileSync, existsSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const MARK = 'accessloop: closed-socket guard';
export const ORIGINAL = `  function nextWrite(fn) {
    const x = socket.write(chunk, fn)`;
export const PATCHED = `  function nextWrite(fn) {
    if (!socket) { // ${MARK}
      chunk = nextWriteTimer = null
      error(Errors.connection('CONNECTION_CLOSED', options, socket))
      return false
    }
    const x = socket.write(chunk, fn)`;

/** Both builds Node loads (`import` and `require`); each carries its own copy of the function. */
export const GUARDED_FILES = ['src/connection.js', 'cjs/src/connection.js'];

/** The installed postgres package's directory, or null when it is not installed. */
export function postgresRoot() {
  const require = createRequire(import.meta.url);
  try {
    // The package's export map hides package.json: start from its entry point and walk up.
    let root = path.dirname(require.resolve('postgres'));
    while (!existsSync(path.join(root, 'package.json')) || JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).name !== 'postgres') {
      const up = path.dirname(root);
      if (up === root) throw new Error('postgres package root not found');
      root = up;
    }
    return root;
  } catch {
    return null;
  }
}

/** Whether `nextWrite` itself checks the socket (`connect()` has an `if (!socket)` of its own). */
export function guardsNextWrite(text) {
  const body = /function nextWrite\(fn\) \{\n([\s\S]*?)\n  \}/.exec(text)?.[1];
  return body !== undefined && /if \(!socket\b/.test(body);
}

function patchInstalledDriver() {
  const root = postgresRoot();
  if (root === null) return; // not installed (e.g. a partial install): nothing to patch
  const { version } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));

  for (const rel of GUARDED_FILES) {
    const file = path.join(root, rel);
    if (!existsSync(file)) continue;
    const text = readFileSync(file, 'utf8');
    if (text.includes(MARK)) continue;
    if (!text.includes(ORIGINAL)) {
      if (guardsNextWrite(text)) continue; // upstream guards it itself now
      console.error(`[patch-deps] postgres ${version}: ${rel} no longer matches the code this guard was written for; review temporal/patch-deps.mjs`);
      process.exit(1);
    }
    writeFileSync(file, text.replace(ORIGINAL, PATCHED));
    console.log(`[patch-deps] postgres ${version}: guarded nextWrite in ${rel}`);
  }
}

// Patch only when run as the postinstall script, not when the test imports the texts.
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) patchInstalledDriver();
