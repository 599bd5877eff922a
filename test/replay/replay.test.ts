import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils.js';
import { bundleWorkflowCode, DefaultLogger, Worker } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import { beforeAll, describe, expect, it } from 'vitest';
import { workflowBundle } from '../../temporal/worker.js';

const dir = fileURLToPath(new URL('./histories/', import.meta.url));
let histories: Array<{ workflowId: string; history: ReturnType<typeof historyFromJSON> }>;

beforeAll(async () => {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.json')).sort();
  histories = await Promise.all(files.map(async (f) => ({ workflowId: f, history: historyFromJSON(JSON.parse(await readFile(dir + f, 'utf8'))) })));
});

async function replayAll(bundle: Awaited<ReturnType<typeof workflowBundle>>) {
  const results: Array<{ workflowId: string; error?: unknown }> = [];
  for await (const r of Worker.runReplayHistories({ workflowBundle: bundle, replayName: 'accessloop-replay' }, histories)) results.push(r);
  return results;
}

describe('replay of captured accessRequestWorkflow histories', () => {
  it('has histories of every lifecycle shape', () => {
    const shapes = ['approved-expired', 'extended-then-revoked', 'rejected', 'revocation-unverified-then-verified'];
    // v1: recorded before policy stages and notifications (they must keep replaying: patched()).
    // v2: the current shapes, including multi-stage quorum, escalation and extension re-approval.
    expect(histories.map((h) => h.workflowId)).toEqual([
      ...shapes.map((n) => `v1-${n}.json`),
      ...[...shapes, 'two-stages-escalation-extension', 'break-glass-expired'].sort().map((n) => `v2-${n}.json`),
    ]);
  });

  it('replays every history against the current workflow code without nondeterminism', async () => {
    const results = await replayAll(await workflowBundle());
    expect(results.map((r) => ({ id: r.workflowId, error: r.error ? String(r.error) : undefined }))).toEqual(histories.map((h) => ({ id: h.workflowId, error: undefined })));
  });

  it('fails when the workflow changes incompatibly (the replay test can fail)', async () => {
    const changed = await bundleWorkflowCode({ workflowsPath: fileURLToPath(new URL('./fixtures/changed-workflow.ts', import.meta.url)), logger: new DefaultLogger('WARN') });
    const results = await replayAll(changed);
    expect(results).toHaveLength(histories.length);
    for (const r of results) expect(r.error).toBeInstanceOf(DeterminismViolationError);
  });
});
