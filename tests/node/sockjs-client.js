"use strict";
// SockJS clients for wharf's tests, on the XHR-polling transport only:
//   node sockjs-client.js URL COUNT [--cookies] [--messages N] [--timeout MS]
// URL is the SockJS prefix, e.g. http://127.0.0.1:8080/echo. A minimal client
// written from the SockJS protocol, as sockjs-client does it in a browser:
//   GET  URL/info                          (server capabilities; as real clients)
//   POST URL/<server>/<session>/xhr        open: the answer is the frame `o`;
//                                          then long polls: `a[...]` messages,
//                                          `h` heartbeat, `c[code,reason]` close
//   POST URL/<server>/<session>/xhr_send   body `["message"]`, answer 204
// <server> is three random digits and <session> a random id, per client.
// A poll that reaches a server which does not know the session opens a new
// session there (answer `o` again) and a send gets 404: both are failures.
// Without --cookies no cookie is ever sent; with it each client keeps its own
// jar (name=value of every Set-Cookie it receives, sent back on every request).
// Each client uses its own keep-alive agent (as a browser tab would).
// Sends N messages one at a time; each must be echoed, all by one server.
// Prints one JSON summary line (see common.js) when every client is done, or
// at the --timeout deadline (default 20000 ms), then exits.
const http = require("http");
const crypto = require("crypto");
const { clientArgs, Summary, withTimeout } = require("./common");

const usage = "node sockjs-client.js URL COUNT [--cookies] [--messages N] [--timeout MS]";
const opts = clientArgs(usage);
const base = new URL(opts.url.replace(/\/+$/, ""));
if (base.protocol !== "http:") {
  process.stderr.write(`only http:// URLs are supported\nusage: ${usage}\n`);
  process.exit(2);
}
const summary = new Summary(opts.count);
const STEP_MS = Math.max(1000, Math.floor(opts.timeoutMs / 2));
const agents = [];

function finish(timedOut) {
  summary.print(timedOut);
  for (const agent of agents) agent.destroy();
  process.exit(0);
}

const deadline = setTimeout(() => finish(true), opts.timeoutMs);

/** One HTTP exchange: resolves {status, body}. */
function request(client, method, path, body) {
  return new Promise((resolve, reject) => {
    const headers = { accept: "*/*" };
    if (body !== undefined) {
      headers["content-type"] = "text/plain;charset=UTF-8";
      headers["content-length"] = Buffer.byteLength(body);
    }
    if (client.jar) {
      const cookie = [...client.jar].map(([name, value]) => `${name}=${value}`).join("; ");
      if (cookie) headers.cookie = cookie;
    }
    const req = http.request(
      { host: base.hostname, port: base.port || 80, path: base.pathname + path, method, headers, agent: client.agent },
      (res) => {
        if (client.jar) {
          for (const line of res.headers["set-cookie"] || []) {
            const pair = line.split(";", 1)[0];
            const eq = pair.indexOf("=");
            if (eq > 0) client.jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
          }
        }
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      },
    );
    req.setTimeout(STEP_MS * 2, () => req.destroy(new Error(`${method} ${path}: no answer`)));
    req.on("error", reject);
    req.end(body);
  });
}

/** Splits an XHR-polling answer into frames: `o`, `h`, `a[...]`, `c[...]`. */
function frames(body) {
  return body.split("\n").filter((f) => f.length > 0);
}

async function runClient(index) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 6 });
  agents.push(agent);
  const client = { agent, jar: opts.cookies ? new Map() : null };
  const serverId = String(crypto.randomInt(0, 1000)).padStart(3, "0");
  const sessionId = crypto.randomBytes(12).toString("hex");
  const session = `/${serverId}/${sessionId}`;
  const received = []; // messages not yet matched by the sender
  let waiter = null; // wakes the sender when a message arrives or the poll fails
  let failure = null;
  let closed = false;
  const wake = () => {
    if (waiter) {
      const w = waiter;
      waiter = null;
      w();
    }
  };
  const failWith = (message) => {
    if (!failure) failure = message;
    wake();
  };

  async function pollLoop() {
    while (!closed && !failure) {
      let res;
      try {
        res = await request(client, "POST", `${session}/xhr`);
      } catch (err) {
        if (!closed) failWith(`poll: ${err.message}`);
        return;
      }
      if (closed) return;
      if (res.status !== 200) return failWith(`poll answered ${res.status}: ${res.body.trim()}`);
      for (const frame of frames(res.body)) {
        if (frame === "h") continue;
        if (frame === "o") return failWith("poll opened a new session: it reached a server that did not know this one");
        if (frame.startsWith("c")) return failWith(`session closed: ${frame}`);
        if (frame.startsWith("a")) {
          for (const message of JSON.parse(frame.slice(1))) received.push(message);
          wake();
        } else return failWith(`unexpected frame ${JSON.stringify(frame)}`);
      }
    }
  }

  try {
    const info = await request(client, "GET", "/info");
    if (info.status !== 200) throw new Error(`info answered ${info.status}`);
    const open = await request(client, "POST", `${session}/xhr`);
    if (open.status !== 200 || open.body !== "o\n") throw new Error(`open answered ${open.status} ${JSON.stringify(open.body)}`);
    const polling = pollLoop();
    let server;
    for (let i = 0; i < opts.messages; i++) {
      const data = `client ${index} message ${i}`;
      const sent = await request(client, "POST", `${session}/xhr_send`, JSON.stringify([data]));
      if (sent.status !== 204) throw new Error(`send ${i} answered ${sent.status}: ${sent.body.trim()}`);
      const reply = await withTimeout(
        (async () => {
          for (;;) {
            if (failure) throw new Error(failure);
            if (received.length > 0) return JSON.parse(received.shift());
            await new Promise((resolve) => (waiter = resolve));
          }
        })(),
        STEP_MS,
        `no echo of message ${i}`,
      );
      if (reply.data !== data) throw new Error(`echo ${i} carried ${JSON.stringify(reply)}`);
      if (server === undefined) server = reply.server;
      else if (reply.server !== server) throw new Error(`echo ${i} came from ${reply.server}, earlier ones from ${server}`);
    }
    closed = true;
    summary.succeed(server);
    polling.catch(() => {});
  } catch (err) {
    closed = true;
    summary.fail(index, err.message);
  } finally {
    agent.destroy();
  }
}

Promise.all(Array.from({ length: opts.count }, (_, i) => runClient(i))).then(() => {
  clearTimeout(deadline);
  finish(false);
});
