import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig } from '../temporal/config.js';
import { createLogger } from '../temporal/logger.js';
import { startRuntime, type Runtime } from '../temporal/runtime.js';

/**
 * `npm start`: everything with embedded defaults (Temporal dev server + UI, PGlite or
 * DATABASE_URL, demo catalog, worker, API). `npm run api` / `--api-only`: the API alone.
 * SIGTERM/SIGINT: drain HTTP, stop the worker, close the database, stop embedded servers.
 */
const apiOnly = process.argv.includes('--api-only');
const config = loadConfig();
const log = createLogger(config.LOG_LEVEL);
const say = (m: string) => console.log(`[accessloop] ${m}`);

let rt: Runtime | undefined;
try {
  rt = await startRuntime({ config, log, api: true, worker: !apiOnly, say });
} catch (e) {
  console.error(`[accessloop] failed to start: ${(e as Error).message}`);
  process.exit(1);
}

const lines = [
  '',
  'accessloop is running',
  `  API            ${rt.apiUrl}   (OpenAPI: ${rt.apiUrl}/openapi.json, docs: ${rt.apiUrl}/docs)`,
  `  pages          ${rt.apiUrl}/login   (approvals, reviews, break-glass, KPIs; sign in with an API token)`,
  rt.uiUrl ? `  Temporal UI    ${rt.uiUrl}` : `  Temporal       ${rt.temporalAddress}`,
  `  data           ${config.ACCESSLOOP_DATA_DIR}`,
];
if (rt.demo) {
  if (rt.demo.ldapUrl) lines.push(`  demo LDAP      ${rt.demo.ldapUrl}  bind ${rt.demo.ldapBindDn}  (password in ${config.ACCESSLOOP_DATA_DIR}/demo-tokens.json)`);
  if (rt.demo.desk?.users.length) lines.push(`  demo RT        ${rt.demo.desk.url}  sign in as ${rt.demo.desk.users.map((u) => u.name).join(', ')}  (passwords in ${rt.demo.desk.usersFile})`);
  if (rt.demo.sshCa) lines.push(`  demo SSH CA    sshd_config: TrustedUserCAKeys ${rt.demo.sshCa.publicKeyPath}  RevokedKeys ${rt.demo.sshCa.krlPath}  (principal prod-root)`);
  lines.push('', 'demo API tokens (also in demo-tokens.json):');
  for (const [name, t] of Object.entries(rt.demo.tokens)) lines.push(`  export ${name.toUpperCase()}_TOKEN=${t.token}   # ${t.roles.join(',')}`);
  const envName = (n: string) => n.toUpperCase().replace(/[^A-Z0-9]+/g, '_');
  lines.push('', 'demo ids (identities and entitlements):');
  for (const [name, id] of Object.entries(rt.demo.identities)) lines.push(`  export ${envName(name)}_ID=${id}`);
  for (const [name, id] of Object.entries(rt.demo.entitlements)) lines.push(`  export ${envName(name)}_ENT=${id}`);
}
if (rt.demo) {
  // The same exports as a file, so a second terminal can `source .data/demo.env`.
  const exports = lines.filter((l) => l.trimStart().startsWith('export ')).map((l) => l.trim().replace(/\s+#.*$/, ''));
  exports.push(`export API=${rt.apiUrl}`);
  await writeFile(path.join(config.ACCESSLOOP_DATA_DIR, 'demo.env'), exports.join('\n') + '\n', { mode: 0o600 });
  lines.push('', `(all of the above: source ${path.relative(process.cwd(), path.join(config.ACCESSLOOP_DATA_DIR, 'demo.env')) || 'demo.env'})`);
}
console.log(lines.join('\n'));

let stopping = false;
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, async () => {
    if (stopping) return;
    stopping = true;
    say(`${sig}: shutting down`);
    await rt!.stop();
    process.exit(0);
  });
}
