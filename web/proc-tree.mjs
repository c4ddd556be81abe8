// Process trees from /proc, shared by web/web-helper.mjs and its watchdog thread
// (web/helper-watchdog.mjs). Firefox forks from non-main threads, so every task's children count.
import { readFileSync, readdirSync } from 'node:fs';

export function childrenOf(pid) {
  const out = [];
  let tasks = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(/\s+/))
        if (c) out.push(Number(c));
    } catch {
      // the task ended meanwhile
    }
  }
  return out;
}

// `root` and every descendant of it.
export function treePids(root) {
  const seen = new Set();
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop();
    if (seen.has(pid)) continue;
    seen.add(pid);
    stack.push(...childrenOf(pid));
  }
  return [...seen];
}

// SIGKILL to the process group led by `pid` (a browser is launched detached, in its own group)
// and to every descendant of `pid` (Firefox's forkserver children leave that group). Pids are
// read before the kills, so that children reparented by the first kill are not missed.
export function killTree(pid) {
  if (!pid) return;
  const tree = treePids(pid);
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // no such group
  }
  for (const p of tree) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
