import { readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { formatEvidenceProblems, verifyEvidenceBundle, type EvidenceVerification } from '../activities/domain/evidence/index.js';

/*
 * The operator CLI (`npx accessloop …`, run through the api/accessloop.mjs shim). A thin client
 * of the REST API: the identity always comes from ACCESSLOOP_TOKEN, every rule is the API's,
 * and errors are the API's own {error: {code, message}}. `evidence verify` is fully offline.
 */

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  env: Record<string, string | undefined>;
}

const processIo: CliIo = {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
  env: process.env,
};

const USAGE = `usage: accessloop <command> [options]

Commands (you act as the owner of ACCESSLOOP_TOKEN):
  pending                                       your open approval tasks
  approve <requestId> [--comment <text>]        approve the stage assigned to you
  reject <requestId> [--comment <text>]         reject it
  revoke <requestId> --reason <reason> [--comment <text>]
                                                end a lease now; reason: manual, review, leaver, mover,
                                                expired, reconciliation (non-operators: manual only)
  show <requestId>                              status, stages, the lease and the audit timeline
  timeline <requestId>                          the audit timeline only
  evidence export <requestId> [-o <file>]       the signed evidence bundle (auditor, operator)
  evidence verify <file> [--public-key <file>]  verify a bundle offline: schema, every event hash,
                                                adjacency links, signature (optionally pinned key)
  evidence public-key [-o <file>]               the key that signs bundles, with its fingerprint
  token list                                    API tokens: id, principal, roles, expiry (operator;
                                                never a secret)
  token issue <principalId> --role <role> [--role <role> …] [--expires-in <seconds>] [--description <text>]
                                                a token for an identity id or client:<name>; printed
                                                once, only its hash is stored (operator)
  token revoke <tokenId>                        refused for the last live operator token (operator)

Options:
  --json          machine-readable output on stdout
  -h, --help      this text

Environment:
  ACCESSLOOP_URL    the API (default http://127.0.0.1:3000)
  ACCESSLOOP_TOKEN  your bearer token

Exit status: 0 done · 1 failed (API error, evidence that does not verify) · 2 usage`;

class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
    readonly lines: string[] = [],
  ) {
    super(message);
  }
}
const usage = (message: string) => new CliError(`${message}\nrun "accessloop --help" for usage`, 2);

const OPTIONS = {
  json: { type: 'boolean' },
  comment: { type: 'string' },
  reason: { type: 'string' },
  output: { type: 'string', short: 'o' },
  'public-key': { type: 'string' },
  role: { type: 'string', multiple: true },
  'expires-in': { type: 'string' },
  description: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;
type OptionName = keyof typeof OPTIONS;
type Values = { [K in OptionName]?: (typeof OPTIONS)[K] extends { multiple: true } ? string[] : (typeof OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function requestIdArg(v: string | undefined): string {
  if (!v) throw usage('a request id is required');
  // Checked here too: the id becomes a URL path segment.
  if (!UUID.test(v)) throw usage(`"${v}" is not a request id (a UUID)`);
  return v;
}

// ---- the API client ---------------------------------------------------------------------------

interface ApiErrorBody {
  error?: { code?: string; message?: string; details?: unknown };
}

function apiClient(env: CliIo['env']) {
  const base = (env.ACCESSLOOP_URL?.trim() || 'http://127.0.0.1:3000').replace(/\/+$/, '');
  return async function call<T = any>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, opts: { auth?: boolean } = {}): Promise<T> {
    const token = env.ACCESSLOOP_TOKEN?.trim();
    if (opts.auth !== false && !token) throw new CliError('ACCESSLOOP_TOKEN is not set: export your API token (the demo writes them to .data/demo.env)', 2);
    let res: Response;
    try {
      res = await fetch(`${base}${path}`, {
        method,
        headers: {
          accept: 'application/json',
          ...(opts.auth !== false && token ? { authorization: `Bearer ${token}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new CliError(`cannot reach the accessloop API at ${base} (${cause?.code ?? cause?.message ?? (e as Error).message}); set ACCESSLOOP_URL`);
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const e = (json as ApiErrorBody | undefined)?.error;
      if (e?.message) {
        const details = Array.isArray(e.details)
          ? e.details.map((d: { path?: string; message?: string }) => (d && typeof d === 'object' && d.message ? `  - ${d.path ? `${d.path}: ` : ''}${d.message}` : `  - ${JSON.stringify(d)}`))
          : e.details !== undefined
            ? [`  ${JSON.stringify(e.details)}`]
            : [];
        throw new CliError(`${e.message} (${e.code ?? 'error'}, HTTP ${res.status})`, 1, details);
      }
      throw new CliError(`HTTP ${res.status} from ${method} ${path}${text ? `: ${text.slice(0, 200)}` : ''}`);
    }
    if (json === undefined) throw new CliError(`the API answered ${method} ${path} with something that is not JSON`);
    return json as T;
  };
}

// ---- output helpers ---------------------------------------------------------------------------

function table(headers: string[], rows: Array<Array<string | number | null | undefined>>): string {
  const cells = rows.map((r) => r.map((c) => (c === null || c === undefined || c === '' ? '-' : String(c).replace(/\s+/g, ' '))));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(headers), ...cells.map(line)].join('\n');
}

interface TokenRow {
  id: string;
  principalId: string;
  roles: string[];
  description: string | null;
  createdBy: string;
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
}
const tokenState = (t: TokenRow) => (t.revokedAt ? 'revoked' : t.expiresAt && Date.parse(t.expiresAt) <= Date.now() ? 'expired' : 'live');

const clip = (s: string | null | undefined, n: number) => (!s ? s : s.length > n ? `${s.slice(0, n - 1)}…` : s);
const when = (s: string | null | undefined) => (s ? s.replace(/\.\d{3}Z$/, 'Z') : null);

interface TimelineEntry {
  seq: number;
  at: string;
  action: string;
  actorType: string;
  actorId: string;
  reason: string | null;
}

/** `identity:<id>`, `workflow:<name>`; client actors already read `client:<name>`. */
const actorLabel = (t: Pick<TimelineEntry, 'actorType' | 'actorId'>) => (t.actorId.startsWith(`${t.actorType}:`) ? t.actorId : `${t.actorType}:${t.actorId}`);

function timelineTable(timeline: TimelineEntry[]): string {
  return table(
    ['SEQ', 'AT', 'ACTION', 'ACTOR', 'REASON'],
    timeline.map((t) => [t.seq, when(t.at), t.action, actorLabel(t), clip(t.reason, 60)]),
  );
}

function verificationSummary(file: string, v: EvidenceVerification, pinned: boolean): string {
  return (
    `OK ${file}: ${v.campaignId ? `review campaign ${v.campaignId}` : `request ${v.requestId}`}, ${v.events} events (every hash recomputed), ${v.linksChecked} adjacent links, ` +
    `signature valid, key ${v.fingerprint}${pinned ? ' (the pinned key)' : ''}, ` +
    (v.checkpoint
      ? `streams proven in signed checkpoint ${v.checkpoint.id} (${v.checkpoint.treeSize} streams, ${v.checkpoint.createdAt})${v.unanchored ? `, ${v.unanchored} later event(s) linked but not yet checkpointed` : ''}`
      : `chain head seq ${v.head?.seq}`)
  );
}

async function readPinnedKey(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch((e: Error) => {
    throw new CliError(`cannot read the public key file ${file}: ${e.message}`, 2);
  });
  // Either the PEM itself or the JSON of GET /v1/evidence/public-key.
  try {
    const j = JSON.parse(text) as { publicKey?: unknown };
    if (typeof j.publicKey === 'string') return j.publicKey;
  } catch {
    /* PEM */
  }
  return text;
}

/** The verifier behind `evidence verify` and `npm run evidence:verify`: no database, no network. */
export async function verifyEvidenceFile(file: string, opts: { publicKeyFile?: string | undefined } = {}): Promise<EvidenceVerification> {
  const text = await readFile(file, 'utf8').catch((e: Error) => {
    throw new CliError(`cannot read ${file}: ${e.message}`, 2);
  });
  let bundle: unknown;
  try {
    bundle = JSON.parse(text);
  } catch (e) {
    return { valid: false, problems: [{ code: 'not_json', message: `${file} is not JSON (${(e as Error).message})` }], events: 0, linksChecked: 0 };
  }
  const publicKey = opts.publicKeyFile ? await readPinnedKey(opts.publicKeyFile) : undefined;
  return verifyEvidenceBundle(bundle, publicKey === undefined ? {} : { publicKey });
}

// ---- commands ---------------------------------------------------------------------------------

type Command = { options: OptionName[]; run: (args: string[], v: Values, io: CliIo) => Promise<number> };

const COMMANDS: Record<string, Command> = {
  pending: {
    options: ['json'],
    async run(args, v, io) {
      if (args.length) throw usage('pending takes no arguments');
      const { items } = await apiClient(io.env)<{ items: Array<Record<string, any>> }>('GET', '/v1/approvals/pending');
      if (v.json) return io.out(JSON.stringify(items, null, 2)), 0;
      if (!items.length) return io.out('no open approval tasks'), 0;
      io.out(
        table(
          ['REQUEST', 'ENTITLEMENT', 'RISK', 'SUBJECT', 'REQUESTER', 'STAGE', 'DUE', 'TICKET', 'JUSTIFICATION'],
          items.map((i) => [i.requestId, i.entitlementName, i.riskTier, i.subjectId, i.requesterId, i.stage, when(i.dueAt), i.ticketRef, clip(i.justification, 48)]),
        ),
      );
      return 0;
    },
  },
  approve: { options: ['comment', 'json'], run: (a, v, io) => decide('approve', a, v, io) },
  reject: { options: ['comment', 'json'], run: (a, v, io) => decide('reject', a, v, io) },
  revoke: {
    options: ['reason', 'comment', 'json'],
    async run(args, v, io) {
      const [raw, ...extra] = args;
      if (extra.length) throw usage('revoke takes one request id');
      const id = requestIdArg(raw);
      if (!v.reason) throw usage('revoke needs --reason (manual, review, leaver, mover, expired, reconciliation)');
      const r = await apiClient(io.env)('POST', `/v1/access-requests/${id}/revoke`, { reason: v.reason, ...(v.comment ? { comment: v.comment } : {}) });
      if (v.json) return io.out(JSON.stringify(r, null, 2)), 0;
      io.out(`revocation requested for ${id} (reason ${v.reason}); removal is read back from the target — follow it with: accessloop show ${id}`);
      return 0;
    },
  },
  show: {
    options: ['json'],
    async run(args, v, io) {
      if (args.length > 1) throw usage('show takes one request id');
      const id = requestIdArg(args[0]);
      const r = await apiClient(io.env)<Record<string, any>>('GET', `/v1/access-requests/${id}`);
      if (v.json) return io.out(JSON.stringify(r, null, 2)), 0;
      const lines = [
        `request      ${r.id}`,
        `status       ${r.status}${r.failureReason ? ` (${r.failureReason})` : ''}`,
        `entitlement  ${r.entitlementId}`,
        `subject      ${r.subjectId}   requester ${r.requesterId}`,
        `duration     ${r.durationSeconds} s${r.ticketRef ? `   ticket ${r.ticketRef}` : ''}${r.policyVersion ? `   policy ${r.policyVersion}` : ''}`,
        `justification ${r.justification}`,
      ];
      if (r.grant) {
        const g = r.grant;
        lines.push(
          `lease        ${g.status}, granted ${when(g.grantedAt) ?? '-'}, expires ${when(g.expiresAt) ?? '-'}` +
            (g.revokeReason ? `, revoked (${g.revokeReason}) ${when(g.revokedAt) ?? '-'}, removal verified ${when(g.removalVerifiedAt) ?? 'not yet'}` : ''),
        );
      }
      io.out(lines.join('\n'));
      if (r.stages?.length) {
        io.out('\nstages');
        io.out(table(['STAGE', 'NAME', 'APPROVER', 'STATUS', 'DECIDED', 'COMMENT'], r.stages.map((s: Record<string, any>) => [s.stage, s.name, s.approverId, s.status, when(s.decidedAt), clip(s.comment, 60)])));
      }
      io.out('\ntimeline');
      io.out(timelineTable(r.timeline ?? []));
      return 0;
    },
  },
  timeline: {
    options: ['json'],
    async run(args, v, io) {
      if (args.length > 1) throw usage('timeline takes one request id');
      const id = requestIdArg(args[0]);
      const r = await apiClient(io.env)<{ status: string; timeline: TimelineEntry[] }>('GET', `/v1/access-requests/${id}`);
      if (v.json) return io.out(JSON.stringify(r.timeline, null, 2)), 0;
      io.out(`request ${id}: ${r.status}`);
      io.out(timelineTable(r.timeline));
      return 0;
    },
  },
  'evidence export': {
    options: ['output', 'json'],
    async run(args, v, io) {
      if (args.length > 1) throw usage('evidence export takes one request id');
      const id = requestIdArg(args[0]);
      const bundle = await apiClient(io.env)('GET', `/v1/evidence/${id}`);
      const result = verifyEvidenceBundle(bundle);
      if (v.output) {
        await writeFile(v.output, `${JSON.stringify(bundle, null, 2)}\n`, { mode: 0o600 });
        if (v.json) io.out(JSON.stringify({ file: v.output, ...result }, null, 2));
        else if (result.valid) io.out(`wrote ${v.output}\n${verificationSummary(v.output, result, false)}`);
        else io.out(`wrote ${v.output}`);
      } else {
        io.out(JSON.stringify(bundle, null, 2));
      }
      if (result.valid) return 0;
      io.err(`the exported evidence does NOT verify (${result.problems.length} problem${result.problems.length === 1 ? '' : 's'}):\n${formatEvidenceProblems(result.problems)}`);
      return 1;
    },
  },
  'evidence verify': {
    options: ['public-key', 'json'],
    async run(args, v, io) {
      const [file, ...extra] = args;
      if (!file || extra.length) throw usage('evidence verify takes one file');
      const result = await verifyEvidenceFile(file, { publicKeyFile: v['public-key'] });
      if (v.json) io.out(JSON.stringify({ file, ...result }, null, 2));
      else if (result.valid) io.out(verificationSummary(file, result, v['public-key'] !== undefined));
      else {
        io.err(`INVALID ${file}: ${result.problems.length} problem${result.problems.length === 1 ? '' : 's'}${result.fingerprint ? ` (signed by key ${result.fingerprint})` : ''}`);
        io.err(formatEvidenceProblems(result.problems));
      }
      return result.valid ? 0 : 1;
    },
  },
  'evidence public-key': {
    options: ['output', 'json'],
    async run(args, v, io) {
      if (args.length) throw usage('evidence public-key takes no arguments');
      const k = await apiClient(io.env)<{ algorithm: string; publicKey: string; fingerprint: string }>('GET', '/v1/evidence/public-key', undefined, { auth: false });
      if (v.output) await writeFile(v.output, k.publicKey);
      if (v.json) io.out(JSON.stringify(k, null, 2));
      else io.out(`${v.output ? `wrote ${v.output}\n` : k.publicKey}${k.algorithm} ${k.fingerprint}`);
      return 0;
    },
  },
  'token list': {
    options: ['json'],
    async run(args, v, io) {
      if (args.length) throw usage('token list takes no arguments');
      const { items } = await apiClient(io.env)<{ items: TokenRow[] }>('GET', '/v1/tokens');
      if (v.json) return io.out(JSON.stringify(items, null, 2)), 0;
      io.out(table(['ID', 'PRINCIPAL', 'ROLES', 'STATE', 'EXPIRES', 'CREATED', 'BY', 'DESCRIPTION'], items.map((t) => [t.id, t.principalId, t.roles.join(','), tokenState(t), when(t.expiresAt), when(t.createdAt), t.createdBy, clip(t.description, 40)])));
      return 0;
    },
  },
  'token issue': {
    options: ['role', 'expires-in', 'description', 'json'],
    async run(args, v, io) {
      const [principalId, ...extra] = args;
      if (!principalId || extra.length) throw usage('token issue takes one principal: an identity id or client:<name>');
      if (!v.role?.length) throw usage('token issue needs at least one --role (hr_system, requester, approver, operator, auditor)');
      let expiresInSeconds: number | undefined;
      if (v['expires-in'] !== undefined) {
        expiresInSeconds = Number(v['expires-in']);
        if (!Number.isInteger(expiresInSeconds) || expiresInSeconds <= 0) throw usage(`--expires-in takes a whole number of seconds, not "${v['expires-in']}"`);
      }
      const r = await apiClient(io.env)<{ id: string; token: string; principalId: string; roles: string[]; expiresAt: string | null }>('POST', '/v1/tokens', {
        principalId,
        roles: v.role,
        ...(expiresInSeconds !== undefined ? { expiresInSeconds } : {}),
        ...(v.description !== undefined ? { description: v.description } : {}),
      });
      if (v.json) return io.out(JSON.stringify(r, null, 2)), 0;
      // The secret on stdout alone (pipe it into a secret store); what it is goes to stderr.
      io.err(`issued token ${r.id} for ${r.principalId} (${r.roles.join(', ')}), ${r.expiresAt ? `expires ${when(r.expiresAt)}` : 'no expiry'}; it is shown only this once`);
      io.out(r.token);
      return 0;
    },
  },
  'token revoke': {
    options: ['json'],
    async run(args, v, io) {
      if (args.length > 1) throw usage('token revoke takes one token id');
      const id = args[0];
      if (!id || !UUID.test(id)) throw usage(`${id ? `"${id}" is not` : 'token revoke needs'} a token id (a UUID, from accessloop token list)`);
      const t = await apiClient(io.env)<TokenRow>('DELETE', `/v1/tokens/${id}`);
      if (v.json) return io.out(JSON.stringify(t, null, 2)), 0;
      io.out(`token ${t.id} for ${t.principalId} revoked ${when(t.revokedAt)}; it is refused from now on`);
      return 0;
    },
  },
};

/** Commands with subcommands, and the subcommands a bare group names in its usage error. */
const GROUPS: Record<string, string> = { evidence: 'export, verify or public-key', token: 'list, issue or revoke' };

async function decide(decision: 'approve' | 'reject', args: string[], v: Values, io: CliIo): Promise<number> {
  if (args.length > 1) throw usage(`${decision} takes one request id`);
  const id = requestIdArg(args[0]);
  const r = await apiClient(io.env)<{ id: string; status: string }>('POST', `/v1/access-requests/${id}/decision`, { decision, ...(v.comment ? { comment: v.comment } : {}) });
  if (v.json) return io.out(JSON.stringify(r, null, 2)), 0;
  io.out(`${decision === 'approve' ? 'approved' : 'rejected'} ${id}: the request is now ${r.status}`);
  return 0;
}

/** Runs one command; returns the exit status. */
export async function main(argv: string[], io: CliIo = processIo): Promise<number> {
  try {
    let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true; args: string[] }>>;
    try {
      parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
    } catch (e) {
      throw usage((e as Error).message);
    }
    const values = parsed.values as Values;
    const [first, ...rest] = parsed.positionals;
    if (values.help || !first) {
      (first || values.help ? io.out : io.err)(USAGE);
      return values.help ? 0 : 2;
    }
    const group = GROUPS[first];
    const name = group ? `${first} ${rest.shift() ?? ''}`.trim() : first;
    const command = COMMANDS[name];
    if (!command) throw usage(group && name === first ? `${first} needs a subcommand: ${group}` : `unknown command "${name}"`);
    const given = (Object.keys(values) as OptionName[]).filter((k) => values[k] !== undefined);
    const foreign = given.filter((k) => !command.options.includes(k));
    if (foreign.length) throw usage(`${name} does not take ${foreign.map((k) => `--${k}`).join(', ')}`);
    return await command.run(rest, values, io);
  } catch (e) {
    if (!(e instanceof CliError)) throw e;
    io.err(`error: ${e.message}`);
    for (const l of e.lines) io.err(l);
    return e.exitCode;
  }
}
