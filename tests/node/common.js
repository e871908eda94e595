"use strict";
// Shared by the client scripts: argument parsing and the one-line JSON
// summary that tests/socketio.rs and tests/sockjs.rs parse.

/** Parses `URL COUNT [--cookies] [--messages N] [--timeout MS]`. */
function clientArgs(usage) {
  const args = process.argv.slice(2);
  const positional = [];
  const options = { cookies: false, messages: 5, timeoutMs: 20000 };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--cookies") options.cookies = true;
    else if (arg === "--messages") options.messages = Number(args[++i]);
    else if (arg === "--timeout") options.timeoutMs = Number(args[++i]);
    else if (arg.startsWith("--")) die(usage, `unknown option ${arg}`);
    else positional.push(arg);
  }
  if (positional.length !== 2) die(usage, "expected URL and COUNT");
  options.url = positional[0];
  options.count = Number(positional[1]);
  if (!Number.isInteger(options.count) || options.count < 1) die(usage, "COUNT must be a positive integer");
  if (!Number.isInteger(options.messages) || options.messages < 1) die(usage, "--messages must be a positive integer");
  if (!Number.isInteger(options.timeoutMs) || options.timeoutMs < 1) die(usage, "--timeout must be a positive integer");
  return options;
}

/** Parses `PORT NAME [flags...]` for the servers; PORT 0 picks a free port. */
function serverArgs(usage, flags = []) {
  const args = process.argv.slice(2);
  const positional = args.filter((a) => !a.startsWith("--"));
  const given = args.filter((a) => a.startsWith("--"));
  for (const flag of given) if (!flags.includes(flag)) die(usage, `unknown option ${flag}`);
  if (positional.length !== 2) die(usage, "expected PORT and NAME");
  const port = Number(positional[0]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) die(usage, "PORT must be 0-65535");
  return { port, name: positional[1], flags: new Set(given) };
}

function die(usage, message) {
  process.stderr.write(`${message}\nusage: ${usage}\n`);
  process.exit(2);
}

/**
 * Collects per-client outcomes and prints, exactly once, the summary line
 * `{"ok":N,"failed":N,"upgraded":N,"servers":{...},"errors":[...]}`.
 * A client that neither succeeded nor failed by the deadline counts as failed.
 */
class Summary {
  constructor(count) {
    this.count = count;
    this.ok = 0;
    this.failed = 0;
    this.upgraded = 0;
    this.servers = {};
    this.errors = [];
    this.printed = false;
  }
  succeed(server) {
    this.ok += 1;
    this.servers[server] = (this.servers[server] || 0) + 1;
  }
  fail(client, message) {
    this.failed += 1;
    if (this.errors.length < 5) this.errors.push(`client ${client}: ${message}`);
  }
  get done() {
    return this.ok + this.failed >= this.count;
  }
  print(timedOut) {
    if (this.printed) return;
    this.printed = true;
    const pending = this.count - this.ok - this.failed;
    if (timedOut && pending > 0) {
      this.failed += pending;
      if (this.errors.length < 5) this.errors.push(`${pending} client(s) unfinished at the deadline`);
    }
    process.stdout.write(
      JSON.stringify({
        ok: this.ok,
        failed: this.failed,
        upgraded: this.upgraded,
        servers: this.servers,
        errors: this.errors,
      }) + "\n",
    );
  }
}

/** Rejects with `message` unless `promise` settles within `ms`. */
function withTimeout(promise, ms, message) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

module.exports = { clientArgs, serverArgs, Summary, withTimeout };
