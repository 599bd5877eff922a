import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { clusterProcesses, startCluster, type Cluster } from '../helpers/cluster.js';

// The real multi-process cluster (temporal/cluster/cluster.sh) in its own run dir, ports and
// databases: two frontends share one namespace and one set of workflows, and losing a history
// node to SIGKILL moves its shards to the other without losing service.

const suffix = randomUUID().slice(0, 8);
let cluster: Cluster | undefined;
let dir: string;
let clients: [Client, Client];
let connections: Connection[] = [];
let workerConnection: NativeConnection | undefined;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-cluster-'));
  cluster = await startCluster({
    dir,
    db: `accessloop_temporal_it_${suffix}`,
    visibilityDb: `accessloop_temporal_visibility_it_${suffix}`,
    reset: true,
    temporalCli: inject('temporalCli'),
  });
  connections = await Promise.all(cluster.frontends.map((address) => Connection.connect({ address })));
  clients = [new Client({ connection: connections[0]!, namespace: 'default' }), new Client({ connection: connections[1]!, namespace: 'default' })];
  // Long enough for the first `up` on a machine, which builds the server (temporal/cluster/provision.sh).
}, 16 * 60_000);

afterAll(async () => {
  await workerConnection?.close();
  await Promise.all(connections.map((c) => c.close()));
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

it('runs six processes, and both frontends see the same namespace and workflows', async () => {
  expect(await cluster!.running()).toEqual([...clusterProcesses]);
  const viaOne = await clients[0].workflowService.describeNamespace({ namespace: 'default' });
  const viaTwo = await clients[1].workflowService.describeNamespace({ namespace: 'default' });
  expect(viaOne.namespaceInfo?.id).toBeTruthy();
  expect(viaTwo.namespaceInfo?.id).toBe(viaOne.namespaceInfo?.id);

  const workflowId = `cluster-${randomUUID()}`;
  // A type no worker polls for: the workflow stays running, which is all this check needs.
  await clients[0].workflow.start('notPolledForAnywhere', { taskQueue: `cluster-idle-${suffix}`, workflowId });
  const described = await clients[1].workflow.getHandle(workflowId).describe();
  expect(described.status.name).toBe('RUNNING');
  await clients[1].workflow.getHandle(workflowId).terminate('test finished');
});

it('keeps serving after history-1 is SIGKILLed: a new workflow starts through frontend-2 and completes', async () => {
  const taskQueue = `cluster-probe-${suffix}`;
  workerConnection = await NativeConnection.connect({ address: cluster!.frontends[1] });
  const worker = await Worker.create({
    connection: workerConnection,
    namespace: 'default',
    taskQueue,
    workflowsPath: fileURLToPath(new URL('./fixtures/cluster-probe-workflow.ts', import.meta.url)),
    shutdownGraceTime: '1s',
  });
  await worker.runUntil(async () => {
    expect(await clients[0].workflow.execute('clusterProbe', { taskQueue, workflowId: `probe-${randomUUID()}`, args: ['before'] })).toBe('probed before');

    await cluster!.kill('history-1');
    expect(await cluster!.running()).not.toContain('history-1');
    // Starts for shards history-1 owned wait (inside the frontend's retries) until membership
    // hands them to history-2: seconds, well inside the client's default RPC deadline.
    const ids = Array.from({ length: 8 }, () => `probe-${randomUUID()}`);
    const results = await Promise.all(ids.map((workflowId, i) => clients[1].workflow.execute('clusterProbe', { taskQueue, workflowId, args: [`after-${i}`] })));
    expect(results).toEqual(ids.map((_, i) => `probed after-${i}`));
    for (const workflowId of ids) expect((await clients[0].workflow.getHandle(workflowId).describe()).status.name).toBe('COMPLETED');

    await cluster!.restart('history-1');
    expect(await cluster!.running()).toEqual([...clusterProcesses]);
  });
});
