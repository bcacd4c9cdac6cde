// Node socket.io 4 references of the delivery benchmark (bench/delivery).
// Usage: node delivery_server.js --adapter memory|redis [--csr] [--redis-url URL --key K]
// Prints the gateway contract's ready line {"event":"ready","host":...,"port":N}.
//
// Clients join with a sails virtual request `post /bench/join {room}` (answered with a
// JWR, as Sails would); sails.io.js (socket.io-client 2) is accepted through allowEIO3.
// --csr turns on socket.io's connectionStateRecovery (in-memory adapter only: the redis
// adapter does not support it). The process that is told to publish reads JSON lines on
// stdin: {"op":"run","rooms":[...],"rate_per_room":R,"duration_s":D} and answers
// {"ok":true,"sent":{room:[t_ms of n=1, n=2, ...]}} when done.
"use strict";

const http = require("node:http");
const readline = require("node:readline");
const { parseArgs } = require("node:util");
const { Server } = require("socket.io");

const { values: args } = parseArgs({
  options: {
    adapter: { type: "string", default: "memory" },
    csr: { type: "boolean", default: false },
    "redis-url": { type: "string" },
    key: { type: "string", default: "delivery" },
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "0" },
  },
});

const EVENT = "m";
const RECOVERY_WINDOW_MS = 2 * 60 * 1000; // socket.io's default maxDisconnectionDuration
const httpServer = http.createServer();
const options = { transports: ["websocket"], serveClient: false, allowEIO3: true };
if (args.csr) {
  options.connectionStateRecovery = { maxDisconnectionDuration: RECOVERY_WINDOW_MS, skipMiddlewares: true };
}
const closers = [];
if (args.adapter === "redis") {
  const { createAdapter } = require("@socket.io/redis-adapter");
  const Redis = require("ioredis");
  const pubClient = new Redis(args["redis-url"]);
  const subClient = pubClient.duplicate();
  options.adapter = createAdapter(pubClient, subClient, { key: args.key });
  closers.push(() => pubClient.disconnect(), () => subClient.disconnect());
}
const io = new Server(httpServer, options);

io.on("connection", (socket) => {
  socket.on("post", (req, ack) => {
    const ok = req && req.url === "/bench/join" && req.data && typeof req.data.room === "string";
    if (ok) socket.join(req.data.room);
    if (typeof ack === "function") {
      ack({ body: ok ? "OK" : "Not Found", headers: {}, statusCode: ok ? 200 : 404 });
    }
  });
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function run({ rooms, rate_per_room, duration_s }) {
  const total = Math.max(1, Math.round(rate_per_room * duration_s));
  const sent = Object.fromEntries(rooms.map((room) => [room, []]));
  const start = Date.now();
  for (let n = 1; n <= total; n++) {
    const due = start + ((n - 1) / rate_per_room) * 1000;
    if (due > Date.now()) await sleep(due - Date.now());
    rooms.forEach((room, r) => {
      const t = Date.now();
      io.to(room).emit(EVENT, { r, n, t });
      sent[room].push(t);
    });
  }
  return { sent };
}

readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const { op, ...request } = JSON.parse(line);
  let reply;
  try {
    if (op !== "run") throw new Error(`unknown op ${op}`);
    reply = { ok: true, ...(await run(request)) };
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
  closers.forEach((close) => close());
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
