// The etcd backend through the client: a real etcd started here (the
// `etcd` and `etcdctl` binaries, as CI installs them), and the outcome
// 'lease-lost' from a real attempt whose key an operator deleted.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { next, sandbox, SOON, within } from "./support.js";

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startEtcd(t) {
  const [client, peer] = [await freePort(), await freePort()];
  const dir = mkdtempSync(join(tmpdir(), "locksup-node-etcd-"));
  const url = `http://127.0.0.1:${client}`;
  const peerUrl = `http://127.0.0.1:${peer}`;
  const proc = spawn("etcd", [
    "--name", "n1", "--data-dir", join(dir, "data"),
    "--listen-client-urls", url, "--advertise-client-urls", url,
    "--listen-peer-urls", peerUrl, "--initial-advertise-peer-urls", peerUrl,
    "--initial-cluster", `n1=${peerUrl}`, "--unsafe-no-fsync",
  ], { stdio: "ignore" });
  t.after(() => {
    try { process.kill(proc.pid, "SIGKILL"); } catch {}
    rmSync(dir, { recursive: true, force: true });
  });
  const until = Date.now() + 30_000;
  while (Date.now() < until) {
    const r = spawnSync("etcdctl", ["--endpoints", url, "endpoint", "health"], { env: { ...process.env, ETCDCTL_API: "3" } });
    if (r.status === 0) return url;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("etcd did not start within 30 s");
}

test("lease-lost: the attempt's etcd key deleted by an operator", async (t) => {
  const url = await startEtcd(t);
  const sb = sandbox(t);
  const h = sb.attempt(
    { lock: sb.path("s.lock"), backend: "etcd", etcdEndpoints: [url], etcdKey: "node-test", grace: "2s" },
    "sleep",
    ["30"],
  );
  const acquired = await within(next(h, "acquired"), SOON, "acquired");
  assert.ok(Number.isSafeInteger(acquired.fence) && acquired.fence > 0, `fence ${acquired.fence}`);
  const del = spawnSync("etcdctl", ["--endpoints", url, "del", "--prefix", "/locksup/node-test/"], {
    env: { ...process.env, ETCDCTL_API: "3" },
  });
  assert.equal(del.status, 0, String(del.stderr));
  const r = await within(h.result, SOON, "the attempt");
  assert.equal(r.outcome, "lease-lost");
  assert.equal(r.code, 124);
  assert.equal(r.fence, acquired.fence);
});
