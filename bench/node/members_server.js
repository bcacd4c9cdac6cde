// Node socket.io 4 reference of the presence benchmark (bench/presence): who is in a room,
// cluster-wide, with the redis adapter's fetchSockets().
// Usage: node members_server.js --redis-url URL --key K
// Prints the gateway contract's ready line {"event":"ready","host":...,"port":N}.
//
// A client joins the rooms listed in its handshake query (?rooms=a,b) on connect, so the
// Python harness's raw clients need no extra round trip. The process the harness queries
// reads JSON lines on stdin: {"op":"fetch","room":R,"n":N,"budget_s":B} runs up to N
// `await io.in(R).fetchSockets()` one after the other (stopping once B seconds are spent)
// and answers {"ok":true,"ms":[...],"lengths":[...],"failed":F,"errors":[first 5]} (a
// query that rejects, e.g. a server's reply missing at the adapter's timeout, is counted
// in F, not timed); `.length` of the
// answer is the count a Socket.IO app gets (socket.io has no cheaper cluster-wide count).
"use strict";

const http = require("node:http");
const readline = require("node:readline");
const { parseArgs } = require("node:util");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const Redis = require("ioredis");

const { values: args } = parseArgs({
  options: {
    "redis-url": { type: "string" },
    key: { type: "string", default: "presence" },
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "0" },
  },
});

const httpServer = http.createServer();
const pubClient = new Redis(args["redis-url"]);
const subClient = pubClient.duplicate();
const io = new Server(httpServer, {
  transports: ["websocket"],
  serveClient: false,
  adapter: createAdapter(pubClient, subClient, { key: args.key }),
});

io.on("connection", (socket) => {
  const rooms = socket.handshake.query.rooms;
  if (typeof rooms === "string" && rooms) socket.join(rooms.split(","));
});

async function fetch({ room, n, budget_s }) {
  const ms = [];
  const lengths = [];
  const errors = [];
  const deadline = Date.now() + budget_s * 1000;
  for (let i = 0; i < n && Date.now() < deadline; i++) {
    const t0 = process.hrtime.bigint();
    try {
      const sockets = await io.in(room).fetchSockets();
      lengths.push(sockets.length);
      ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    } catch (err) {
      errors.push(String(err && err.message ? err.message : err)); // not timed, counted
    }
  }
  return { ms, lengths, errors: errors.slice(0, 5), failed: errors.length };
}

readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const { op, ...request } = JSON.parse(line);
  let reply;
  try {
    if (op !== "fetch") throw new Error(`unknown op ${op}`);
    reply = { ok: true, ...(await fetch(request)) };
  } catch (err) {
    reply = { ok: false, error: String(err && err.stack ? err.stack : err) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
});

httpServer.listen(Number(args.port), args.host, () => {
  const { port } = httpServer.address();
  process.stdout.write(JSON.stringify({ event: "ready", host: args.host, port }) + "\n");
});

function stop() {
  io.close();
  pubClient.disconnect();
  subClient.disconnect();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
