// The web helper's watchdog, a worker thread of web/web-helper.mjs. crossdl starts the helper
// with PR_SET_PDEATHSIG (SIGTERM), and the helper closes its browser on SIGTERM, but a signal
// handler runs on the main thread's event loop: while that thread is inside a long synchronous
// computation (TF.js' cpu backend in Node, say) it cannot run, and a study cell killed for its
// timeout would leave the helper computing and its browser running. This thread does not share
// that loop: when the helper's parent is gone (the helper was re-parented) and the main thread
// has not exited within a grace period, it kills the browser's process tree, removes the
// temporary profile and kills the helper.
import { rmSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

import { killTree, treePids } from './proc-tree.mjs';

const POLL_MS = 250;
const GRACE_MS = 3000;
const parent = workerData.parentPid;  // the helper's parent when it started (crossdl)
let browserPid = null;
let profile = null;

parentPort.on('message', (m) => {
  if ('browserPid' in m) browserPid = m.browserPid;
  if ('profile' in m) profile = m.profile;
});

function parentAlive() {
  if (process.ppid !== parent) return false;
  try {
    process.kill(parent, 0);
    return true;
  } catch {
    return false;
  }
}

let orphanedAt = null;
setInterval(() => {
  if (parentAlive()) return;
  orphanedAt ??= Date.now();
  if (Date.now() - orphanedAt < GRACE_MS) return;
  process.stderr.write('web-helper watchdog: crossdl is gone and the helper did not exit; ' +
                       'killing its browser and itself\n');
  // Whatever the helper started (a browser still launching has no recorded pid yet) goes too.
  if (browserPid) killTree(browserPid);
  for (const p of treePids(process.pid)) if (p !== process.pid) killTree(p);
  if (profile) {
    try {
      rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    } catch {
      // a file still held open: nothing more can be done from here
    }
  }
  process.kill(process.pid, 'SIGKILL');
}, POLL_MS);
