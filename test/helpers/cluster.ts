import net from 'node:net';
import { repoRoot, run } from './cli.js';

/** The six processes of temporal/cluster/cluster.sh, each its own server process. */
export const clusterProcesses = ['frontend-1', 'frontend-2', 'history-1', 'history-2', 'matching-1', 'worker-1'] as const;
export type ClusterProcess = (typeof clusterProcesses)[number];

export interface ClusterOptions {
  /** Run dir (config, pid files, logs); default the script's `.data/cluster`. */
  dir?: string;
  /** frontend-1's gRPC port; the others at fixed offsets up to +52. Default: a free range. */
  portBase?: number;
  db?: string;
  visibilityDb?: string;
  /** Drop both databases before starting, and again in stop(). */
  reset?: boolean;
  /** The `temporal` CLI for health checks and the namespace (default: the script's lookup). */
  temporalCli?: string;
}

export interface Cluster {
  /** frontend-1 and frontend-2, `127.0.0.1:<port>`. */
  frontends: [string, string];
  dir: string | undefined;
  /** SIGKILL one process (no shutdown: its shards and leases are left for the others to take). */
  kill(name: ClusterProcess): Promise<void>;
  /**
   * Start a killed process again; resolves once it listens, with what the script reported on
   * the way (empty, or the log tail of a first attempt that exited: it tries twice).
   */
  restart(name: ClusterProcess): Promise<string>;
  /** Which processes run (pid file and a live process of this run dir). */
  running(): Promise<ClusterProcess[]>;
  stop(): Promise<void>;
}

const script = `${repoRoot}temporal/cluster/cluster.sh`;
// First `up` on a machine builds the server (3-6 minutes on two cores); later ones take seconds.
const UP_TIMEOUT_MS = 15 * 60_000;

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A base port whose 53-port block (gRPC, HTTP and membership of all six) is free now. */
async function freePortBase(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    // Below 32767: Temporal stores membership ports in a smallint column.
    const base = 20_000 + Math.floor(Math.random() * 120) * 100;
    const used = [0, 10, 20, 30, 40, 50].flatMap((o) => [base + o, base + o + 1, base + o + 2]);
    if ((await Promise.all(used.map(portFree))).every(Boolean)) return base;
  }
  throw new Error('no free block of ports for the cluster');
}

/**
 * Brings up the real multi-process cluster through temporal/cluster/cluster.sh (the same script
 * as `npm run cluster:up`), so tests and operators run one implementation.
 */
export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const env: Record<string, string | undefined> = {
    ACCESSLOOP_CLUSTER_DIR: opts.dir,
    ACCESSLOOP_CLUSTER_PORT_BASE: String(opts.portBase ?? (await freePortBase())),
    ACCESSLOOP_CLUSTER_DB: opts.db,
    ACCESSLOOP_CLUSTER_VISIBILITY_DB: opts.visibilityDb,
    TEMPORAL_CLI_PATH: opts.temporalCli ?? process.env.TEMPORAL_CLI_PATH,
  };
  const script_ = async (args: string[], timeoutMs = 60_000) => {
    const r = await run('bash', [script, ...args], env, timeoutMs);
    if (r.code !== 0 && !(args[0] === 'status' && r.code === 3)) {
      throw new Error(`cluster.sh ${args.join(' ')} exited with ${r.code}:\n${r.stderr}${r.stdout}`);
    }
    return r;
  };
  const cluster = async (args: string[], timeoutMs?: number) => (await script_(args, timeoutMs)).stdout;
  let out: string;
  try {
    out = await cluster(opts.reset ? ['up', '--reset'] : ['up'], UP_TIMEOUT_MS);
  } catch (e) {
    // The script stops what it started; the databases of a reset cluster go too.
    if (opts.reset) await cluster(['down', '--reset']).catch(() => undefined);
    throw e;
  }
  const [f1, f2] = out.trim().split('\n').at(-1)!.split(',');
  if (!f1 || !f2) throw new Error(`cluster.sh up printed no frontend addresses:\n${out}`);
  return {
    frontends: [f1, f2],
    dir: opts.dir,
    async kill(name) {
      await cluster(['kill', name]);
    },
    async restart(name) {
      return (await script_(['start', name], 240_000)).stderr.trim();
    },
    async running() {
      const status = await cluster(['status']);
      return clusterProcesses.filter((p) => new RegExp(`^${p}\\s+running`, 'm').test(status));
    },
    async stop() {
      await cluster(opts.reset ? ['down', '--reset'] : ['down']);
    },
  };
}
