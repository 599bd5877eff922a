/**
 * What operators see in the Temporal UI, read through the Temporal CLI (the UI's own queries):
 * typed search attributes answer the README's saved queries; workflows carry a static summary,
 * live details and activity summaries, all without names or e-mails.
 */
import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { resolveTemporalBinary } from '../../temporal/dev-server.js';
import { decodedHistoryText } from '../helpers/history.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

let s: Stack;
let tok: Record<string, string>;
let cli: string;
const ids: Record<'active' | 'pending' | 'revoked', string> = { active: '', pending: '', revoked: '' };
const TICKET = 'CHG-20261123';

/** `temporal workflow list --query …` → the workflow ids it returns (JSON lines). */
function listIds(query: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    execFile(
      cli,
      ['workflow', 'list', '--address', inject('temporalAddress'), '--namespace', 'default', '--query', query, '--output', 'json', '--limit', '100'],
      { timeout: 30_000 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`temporal workflow list failed: ${stderr}`));
        const text = stdout.trim();
        if (!text) return resolve([]);
        // one JSON array, or one object per line depending on the CLI version
        const rows = (text.startsWith('[') ? JSON.parse(text) : text.split('\n').map((l) => JSON.parse(l))) as Array<{ execution: { workflowId: string } }>;
        resolve(rows.map((r) => r.execution.workflowId));
      },
    );
  });
}

/** Visibility is eventually consistent: wait until the query answers exactly `expected` (among ours). */
async function expectQuery(query: string, expected: string[], ours: string[]): Promise<void> {
  const want = expected.map((id) => `access-request/${id}`).sort();
  await waitFor(
    async () => {
      const got = (await listIds(query)).filter((w) => ours.includes(w)).sort();
      return JSON.stringify(got) === JSON.stringify(want) ? true : undefined;
    },
    `query ${query} to return ${want.join(', ') || 'nothing'}`,
    15_000,
    250,
  );
}

beforeAll(async () => {
  s = await startStack();
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  cli = await resolveTemporalBinary({ cliPath: process.env.TEMPORAL_CLI_PATH });
  const make = async (token: string | undefined, ent: string, ticket?: string) => {
    const r = await s.call('POST', '/v1/access-requests', token, { entitlementId: s.catalog.entitlements[ent], durationSeconds: 3600, justification: 'operator view scenario', ...(ticket ? { ticketRef: ticket } : {}) });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    return r.body.id as string;
  };
  const approve = (id: string) => waitFor(async () => (await s.call('POST', `/v1/access-requests/${id}/decision`, tok.bob, { decision: 'approve' })).status === 200, 'approval');
  ids.active = await make(tok.alice, 'engineering', TICKET);
  await approve(ids.active);
  await s.waitForStatus(ids.active, ['active']);
  ids.revoked = await make(tok.alice, 'finance-readers');
  await approve(ids.revoked);
  await s.waitForStatus(ids.revoked, ['active']);
  await s.call('POST', `/v1/access-requests/${ids.revoked}/revoke`, tok.alice, { reason: 'manual' });
  await s.waitForStatus(ids.revoked, ['revoked']);
  ids.pending = await make(tok.carol, 'prod-admins');
}, 120_000);

afterAll(async () => {
  await s?.stop();
});

describe('Temporal UI for operators', () => {
  it('answers the saved queries through the Temporal CLI with typed search attributes', async () => {
    const ours = Object.values(ids).map((id) => `access-request/${id}`);
    await expectQuery("AccessState = 'active'", [ids.active], ours);
    await expectQuery("WorkflowType = 'accessRequestWorkflow' AND AccessState = 'pending_approval'", [ids.pending], ours);
    await expectQuery("AccessState = 'revoked'", [ids.revoked], ours);
    await expectQuery("AccessState = 'revocation_unverified'", [], ours);
    const in24h = new Date(Date.now() + 24 * 3600_000).toISOString();
    await expectQuery(`AccessState = 'active' AND AccessExpiresAt < '${in24h}'`, [ids.active], ours);
    await expectQuery(`AccessExpiresAt < '${new Date(Date.now() + 60_000).toISOString()}' AND AccessState = 'active'`, [], ours);
    await expectQuery(`IdentityRef = '${s.catalog.identities.alice}'`, [ids.active, ids.revoked], ours);
    await expectQuery(`TicketRef = '${TICKET}'`, [ids.active], ours);
    await expectQuery(`RiskTier = 'privileged'`, [ids.pending], ours);
  });

  it('shows a static summary, live details and activity summaries, free of names and e-mails', async () => {
    const handle = s.rt.temporal.workflow.getHandle(`access-request/${ids.active}`);
    const d = await handle.describe();
    expect(await d.staticSummary()).toBe('Engineering group · medium · 60 min lease');
    expect(await d.staticDetails()).toContain(ids.active);
    // current details, as the UI fetches them (the built-in metadata query), follow the state
    const meta = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
    expect(meta.currentDetails).toMatch(/^\*\*active\*\*/);
    expect(meta.currentDetails).toContain('expires ');
    const history = await handle.fetchHistory();
    const text = await decodedHistoryText(history, [...(s.rt.temporal.options.loadedDataConverter.payloadCodecs ?? [])]);
    for (const summary of ['evaluate the approval policy', 'open approval stage 1 · quorum 1', 'record approve · stage 1', 'grant on the target', 'read the grant back from the target']) {
      expect(text, summary).toContain(summary);
    }
    // ids only: the subject's username and display name appear nowhere in the history
    for (const pii of ['alice', 'Alice Engineer']) expect(text.includes(pii), pii).toBe(false);
  });
});
