"use strict";
// A SockJS server for wharf's tests: `node sockjs-server.js PORT NAME`.
// Mounted at prefix /echo; every message is answered with the JSON text
// {"server": NAME, "data": message}. Prints `ready PORT` (the bound port;
// PORT 0 picks a free one) once listening.
const http = require("http");
const sockjs = require("sockjs");
const { serverArgs } = require("./common");

const { port, name } = serverArgs("node sockjs-server.js PORT NAME");

const echo = sockjs.createServer({ prefix: "/echo", log: () => {} });
echo.on("connection", (conn) => {
  conn.on("data", (message) => conn.write(JSON.stringify({ server: name, data: message })));
});

const httpServer = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(`${name}\n`);
    return;
  }
  res.writeHead(404, { "content-type": "text/plain" });
  res.end("not found\n");
});
echo.installHandlers(httpServer);

httpServer.listen(port, "127.0.0.1", () => {
  process.stdout.write(`ready ${httpServer.address().port}\n`);
});

for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
