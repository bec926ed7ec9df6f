// Starts the real `livesync` runner (target/debug/livesync, or $LIVESYNC_BIN) for a test, on a
// port of its own that stays the same across restarts, so clients reconnect to the same URL.

import { spawn } from 'node:child_process';
import { LiveSync } from '../livesync.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const binary = process.env.LIVESYNC_BIN ?? join(root, 'target', 'debug', 'livesync');

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

export async function startRunner() {
  const dataDir = mkdtempSync(join(tmpdir(), 'livesync-js-'));
  const port = await freePort();
  const runner = { url: `ws://127.0.0.1:${port}`, dataDir, child: null };
  runner.start = async () => {
    const child = spawn(binary, [
      '--listen', `127.0.0.1:${port}`, '--management-listen', '127.0.0.1:0', '--data-dir', dataDir,
      '--write-rate', '100000', '--write-burst', '100000',
      // No template in the data directory: no job runs on a schedule.
    ], { cwd: dataDir, stdio: ['ignore', 'ignore', 'pipe'] });
    runner.child = child;
    await new Promise((resolve, reject) => {
      let seen = '';
      const onData = (chunk) => {
        seen += chunk;
        if (seen.includes('local runner on')) { child.stderr.off('data', onData); child.stderr.resume(); resolve(); }
      };
      child.stderr.on('data', onData);
      child.once('exit', (code) => reject(new Error(`the runner exited (${code}) before listening:\n${seen}`)));
    });
  };
  runner.stop = async () => {
    const child = runner.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  };
  runner.restart = async () => { await runner.stop(); await runner.start(); };
  runner.dispose = async () => { await runner.stop(); rmSync(dataDir, { recursive: true, force: true }); };
  await runner.start();
  return runner;
}

// Waits until `check()` is true (at most `ms`), so tests never depend on how fast things are.
export async function until(check, what, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// A runner for one test file, started before its tests and disposed after them, and clients on
// it that reconnect quickly and are closed after the tests.
export function runnerForTests({ before, after }) {
  let started = null;
  const clients = [];
  const harness = {
    get url() { return started.url; },
    stop: () => started.stop(),
    start: () => started.start(),
    client(options = {}) {
      const c = new LiveSync(started.url, { initialBackoffMs: 20, maxBackoffMs: 200, ...options });
      clients.push(c);
      return c;
    },
  };
  before(async () => { started = await startRunner(); });
  after(async () => {
    for (const c of clients) c.close();
    await started?.dispose();
  });
  return harness;
}
