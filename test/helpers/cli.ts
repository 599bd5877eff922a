import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command in the repository root as a real child process and collects its output. */
export function run(command: string, args: string[], env: Record<string, string | undefined> = {}, timeoutMs = 60_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const merged: Record<string, string> = {};
    for (const [k, v] of Object.entries({ ...process.env, ...env })) if (v !== undefined) merged[k] = v;
    const child = spawn(command, args, { cwd: repoRoot, env: merged, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * The operator CLI exactly as `npx accessloop` runs it (node on the bin shim), against `url`
 * as `token`. ACCESSLOOP_TOKEN is removed when `token` is undefined.
 */
export function accessloop(url: string, token: string | undefined, ...args: string[]): Promise<Ran> {
  // From source: a dist/ left by an earlier `npm run build` must not stand in for the code under test.
  return run(process.execPath, ['api/accessloop.mjs', ...args], { ACCESSLOOP_URL: url, ACCESSLOOP_TOKEN: token, ACCESSLOOP_CLI_FROM_SOURCE: '1' });
}
