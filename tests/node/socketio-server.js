"use strict";
// A Socket.IO 4 server for wharf's tests: `node socketio-server.js PORT NAME [--io-cookie]`.
// On an "echo" event with an ack it acks {server: NAME, data}. Prints
// `ready PORT` (the bound port; PORT 0 picks a free one) once listening.
// Default Engine.IO options (no cookie) unless --io-cookie, which makes the
// handshake set the `io` cookie to the session id (for `learn = "cookie:io"`).
const http = require("http");
const { Server } = require("socket.io");
const { serverArgs } = require("./common");

const { port, name, flags } = serverArgs("node socketio-server.js PORT NAME [--io-cookie]", ["--io-cookie"]);

const httpServer = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(`${name}\n`);
    return;
  }
  res.writeHead(404, { "content-type": "text/plain" });
  res.end("not found\n");
});

const io = new Server(httpServer, flags.has("--io-cookie") ? { cookie: { name: "io", path: "/", httpOnly: true } } : {});

io.on("connection", (socket) => {
  socket.on("echo", (data, ack) => {
    if (typeof ack === "function") ack({ server: name, data });
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  process.stdout.write(`ready ${httpServer.address().port}\n`);
});

for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
