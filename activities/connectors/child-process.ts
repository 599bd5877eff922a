import type { ChildProcess } from 'node:child_process';
import net from 'node:net';

/** Every server process we started (slapd, sshd in tests, …); killed when this process exits. */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

export interface SupervisedChild {
  /** Resolves once the process has exited (or failed to spawn). */
  exited: Promise<void>;
  /** `code=… signal=…` or the spawn error, once it has ended. */
  exitInfo(): string | undefined;
  /** SIGTERM, SIGKILL after `graceMs`, and resolves once it has exited (at once if it already has). */
  terminate(graceMs: number): Promise<void>;
}

/**
 * Registers a long-running child so that a test run or a demo that dies early does not leave it
 * listening, and reports how it ended.
 */
export function superviseChild(proc: ChildProcess): SupervisedChild {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const child of liveChildren) {
        try {
          child.kill('SIGKILL');
        } catch {
          // already gone
        }
      }
    });
  }
  liveChildren.add(proc);
  let info: string | undefined;
  const exited = new Promise<void>((resolve) => {
    proc.once('exit', (code, signal) => {
      info = `code=${code ?? 'null'} signal=${signal ?? 'null'}`;
      liveChildren.delete(proc);
      resolve();
    });
    proc.once('error', (err) => {
      info = `spawn error: ${err.message}`;
      liveChildren.delete(proc);
      resolve();
    });
  });
  const running = () => proc.exitCode === null && proc.signalCode === null;
  const terminate = async (graceMs: number) => {
    if (running()) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => running() && proc.kill('SIGKILL'), graceMs);
      try {
        await exited;
      } finally {
        clearTimeout(timer);
      }
    }
    await exited;
  };
  return { exited, exitInfo: () => info, terminate };
}

/** Whether something accepts TCP connections on 127.0.0.1:port (a started server is listening). */
export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    const done = (ok: boolean) => {
      sock.removeAllListeners();
      sock.on('error', () => undefined);
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}
