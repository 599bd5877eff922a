#!/usr/bin/env node
// Child process for test/integration/postgres-closed-socket.test.ts: reproduces postgres.js's
// write on a closed socket (see temporal/patch-deps.mjs) against the real PostgreSQL, in a process
// of its own because the unpatched driver ends it with an uncaught TypeError.
//
// The sequence, deterministic at every step:
//  1. a transaction (`sql.begin`, which drizzle's `db.transaction` calls) has a query running;
//  2. the server ends that session (pg_terminate_backend: FATAL 57P01, then a clean close, as for
//     every session when PostgreSQL restarts); on the close `closed()` nulls `socket`, rejects the
//     query with CONNECTION_CLOSED and moves the connection to the pool's closed queue, in one
//     synchronous run;
//  3. `begin`'s catch then sends ROLLBACK straight to that same connection object; the write is
//     small, so it is deferred to a setImmediate, which runs `nextWrite` with `socket === null`.
// Nothing reconnects the connection in between: the pool does that only for a query it hands
// over, and on a timer that fires after the immediate. A restart that finds no transaction with a
// query running does not take this path, which is why a restart drill only sometimes crashes.
//
// Usage: node pg-closed-socket-repro.mjs <postgres entry file> <database url> [attempts]
// Prints one JSON line per attempt and exits 0; the unpatched driver dies in the first attempt.
import { pathToFileURL } from 'node:url';

const [entry, databaseUrl, attempts = '1'] = process.argv.slice(2);
if (!entry || !databaseUrl) {
  console.error('usage: pg-closed-socket-repro.mjs <postgres entry file> <database url> [attempts]');
  process.exit(2);
}
const { default: postgres } = await import(pathToFileURL(entry).href);

const RUNNING = 'select pg_sleep(30) as running_when_terminated';
const code = (e) => (e && typeof e === 'object' && 'code' in e ? e.code : String(e));

const admin = postgres(databaseUrl, { max: 1, onnotice: () => {} });
// What the driver wrote, and when the connection closed, in order: it shows that ROLLBACK went to
// the closed connection, so a run that survives has been through the guard, not round it.
let events = [];
let rollbackFlushed = () => {};
const sql = postgres(databaseUrl, {
  max: 1,
  onnotice: () => {},
  debug: (_connection, statement) => {
    events.push(statement.trim());
    // `debug` runs just before the statement's write is deferred to a setImmediate; an immediate
    // queued after that one (they run in order) fires once the deferred write has run.
    if (statement === 'rollback') queueMicrotask(() => setImmediate(rollbackFlushed));
  },
  onclose: () => events.push('<closed>'),
});

/** Resolves once the backend is executing `RUNNING`, so the driver has that query in flight. */
async function untilRunning(pid) {
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    const [{ running }] = await admin`
      select count(*)::int as running from pg_stat_activity
      where pid = ${pid} and state = 'active' and query = ${RUNNING}`;
    if (running === 1) return;
  }
  throw new Error(`backend ${pid} never started the query`);
}

for (let attempt = 1; attempt <= Number(attempts); attempt++) {
  events = [];
  let runningError = null;
  let backendPid;
  const pidKnown = new Promise((resolve) => (backendPid = resolve));
  const flushed = new Promise((resolve) => (rollbackFlushed = resolve));
  // Settled into a code at once: the close can reject it before pg_terminate_backend returns.
  const transactionError = sql
    .begin(async (tx) => {
      const [{ pid }] = await tx`select pg_backend_pid() as pid`;
      backendPid(pid);
      await tx.unsafe(RUNNING).catch((e) => {
        runningError = code(e);
        throw e;
      });
    })
    .then(() => null, code);
  const pid = await pidKnown;
  await untilRunning(pid);
  const [{ terminated }] = await admin`select pg_terminate_backend(${pid}) as terminated`;
  // A query handed to the connection before its deferred ROLLBACK has run is failed with it (the
  // guard rejects all the connection holds), so recovery is measured from after that write.
  await flushed;
  // The first query after it may still fail: the driver keeps the killed session's FATAL 57P01
  // across the close and rejects the reconnect's first query with it (unpatched too, and without
  // a transaction). Our activities already classify 57P01 as a database outage.
  const beforeRecovery = [];
  let fresh = null;
  while (fresh === null && beforeRecovery.length < 3) {
    fresh = await sql`select 1 as fresh`.then(
      ([row]) => row.fresh,
      (e) => (beforeRecovery.push(code(e)), null),
    );
  }
  console.log(
    JSON.stringify({ attempt, terminated, runningError, transactionError: await transactionError, beforeRecovery, fresh, events }),
  );
}

await sql.end({ timeout: 5 });
await admin.end({ timeout: 5 });
