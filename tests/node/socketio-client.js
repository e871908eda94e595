"use strict";
// Socket.IO clients for wharf's tests:
//   node socketio-client.js URL COUNT [--cookies] [--messages N] [--timeout MS]
// Opens COUNT independent connections (each its own Manager and Engine.IO
// socket) with the default transports: HTTP long-polling first, then the
// upgrade to websocket. Once a client runs on websocket it sends N "echo"
// events with an ack, each of which must come back from the same server.
// Without --cookies the client keeps no cookies (the Node.js default); with it
// each client keeps its own cookie jar (engine.io-client's `withCredentials`
// in Node.js: cookies set on any polling response are sent on every later
// polling request and on the websocket upgrade).
// Prints one JSON summary line (see common.js) when every client is done, or
// at the --timeout deadline (default 20000 ms), then exits.
const { io } = require("socket.io-client");
const { clientArgs, Summary, withTimeout } = require("./common");

const usage = "node socketio-client.js URL COUNT [--cookies] [--messages N] [--timeout MS]";
const opts = clientArgs(usage);
const summary = new Summary(opts.count);
const sockets = [];
// Each step of a client gets at most this long; the whole run is bounded by
// opts.timeoutMs anyway.
const STEP_MS = Math.max(1000, Math.floor(opts.timeoutMs / 2));

function finish(timedOut) {
  summary.print(timedOut);
  for (const socket of sockets) socket.disconnect();
  // A moment for the websocket close handshakes, so that connections end
  // cleanly rather than by a reset at exit.
  setTimeout(() => process.exit(0), 200);
}

const deadline = setTimeout(() => finish(true), opts.timeoutMs);

async function runClient(index) {
  const socket = io(opts.url, {
    forceNew: true, // no multiplexing: one Engine.IO session per client
    reconnection: false, // a failure is a failure, not a retry on another server
    withCredentials: opts.cookies,
    timeout: STEP_MS,
  });
  sockets.push(socket);
  // The engine exists from here on; its upgrade probe starts as soon as the
  // handshake is answered, possibly before "connect", so listen now.
  const engine = socket.io.engine;
  const upgraded = new Promise((resolve, reject) => {
    engine.once("upgrade", resolve);
    engine.once("upgradeError", (err) => reject(new Error(`upgrade failed: ${describe(err)}`)));
    socket.once("disconnect", (reason) => reject(new Error(`disconnected before the upgrade: ${reason}`)));
  });
  upgraded.catch(() => {}); // awaited below; a late rejection is no crash
  try {
    await withTimeout(
      new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", (err) => reject(new Error(`connect_error: ${describe(err)}`)));
      }),
      STEP_MS,
      "no connect",
    );
    if (engine.transport.name !== "websocket") await withTimeout(upgraded, STEP_MS, "no upgrade to websocket");
    if (engine.transport.name !== "websocket") throw new Error(`transport is ${engine.transport.name} after the upgrade`);
    summary.upgraded += 1;
    let server;
    for (let i = 0; i < opts.messages; i++) {
      const data = `client ${index} message ${i}`;
      const reply = await socket.timeout(STEP_MS).emitWithAck("echo", data);
      if (!reply || reply.data !== data) throw new Error(`ack ${i} carried ${JSON.stringify(reply)}`);
      if (server === undefined) server = reply.server;
      else if (reply.server !== server) throw new Error(`ack ${i} came from ${reply.server}, earlier ones from ${server}`);
    }
    summary.succeed(server);
  } catch (err) {
    summary.fail(index, err.message);
  } finally {
    socket.disconnect();
  }
}

function describe(err) {
  if (!err) return "unknown error";
  let text = err.message || String(err);
  if (err.description !== undefined) {
    const d = err.description;
    text += ` (${typeof d === "object" ? d.message || d.type || JSON.stringify(d) : d})`;
  }
  if (err.context && typeof err.context.responseText === "string" && err.context.responseText) {
    text += ` response: ${err.context.responseText}`;
  }
  return text.split("\n", 1)[0];
}

Promise.all(Array.from({ length: opts.count }, (_, i) => runClient(i))).then(() => {
  clearTimeout(deadline);
  finish(false);
});
