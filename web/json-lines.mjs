// The request loop of crossdl's Node helpers (web/ort-helper.mjs, web/web-helper.mjs): one JSON
// request per line on stdin, exactly one reply per line on stdout, in order, the request's integer
// `id` echoed (docs/ort-protocol.md). `handle(req)` returns the reply's fields or throws; an error
// with `unsupported` set is marked so in the reply (a skip, not a failure, for the client).
// `amend(reply)` may replace a reply before it is written. Returns at EOF on stdin.
import { createInterface } from 'node:readline';

function write(reply) {
  process.stdout.write(JSON.stringify(reply) + '\n');
}

export async function serveJsonLines(handle, amend = (reply) => reply) {
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (line.trim() === '') continue;
    let req;
    try {
      req = JSON.parse(line);
    } catch (e) {
      write({ id: null, ok: false, error: `bad JSON: ${e.message}` });
      continue;
    }
    const id = req && Number.isInteger(req.id) ? req.id : null;
    let reply;
    try {
      reply = { id, ok: true, ...(await handle(req)) };
    } catch (e) {
      reply = { id, ok: false, error: String(e && e.message ? e.message : e) };
      if (e && e.unsupported) reply.unsupported = true;
    }
    write(amend(reply));
  }
}
