// Publisher worker for reference (c), built on @socket.io/redis-emitter.
// Speaks the harness's JSON-lines protocol (see bench/rpc.py and bench/pubworker.py):
// one request per stdin line, one reply per stdout line, each reply with "cpu_s".
// Usage: node publisher.js --redis-url URL --key PREFIX
"use strict";

const readline = require("node:readline");
const { parseArgs } = require("node:util");
const { Emitter } = require("@socket.io/redis-emitter");
const Redis = require("ioredis");

const { values: args } = parseArgs({
  options: { "redis-url": { type: "string" }, key: { type: "string" } },
});

const EVENT = "bench";
const PAYLOAD_BYTES = 200; // same JSON size as bench/pubworker.py
const PAD = "x".repeat(PAYLOAD_BYTES - '{"t":1764000000000000000,"k":0,"s":0,"p":""}'.length);
const PACING_TICK_MS = 2;
const S4_ROOM = "s4-nobody";

let redis = null;
let emitter = null;

// Wall-clock nanoseconds, comparable with Python's time.time_ns() on the same machine.
const originNs = BigInt(Date.now()) * 1000000n - process.hrtime.bigint();
function nowNs() {
  return Number(originNs + process.hrtime.bigint());
}
function payload(k, seq) {
  return { t: nowNs(), k, s: seq, p: PAD };
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const yieldToIo = () => new Promise((resolve) => setImmediate(resolve));
function cpuSeconds() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}
async function flush() {
  await redis.ping(); // replies are in order: every earlier PUBLISH is done
}

const handlers = {
  async open() {
    redis = new Redis(args["redis-url"]);
    emitter = new Emitter(redis, { key: args.key });
    await redis.ping();
    return {};
  },
  async join({ pairs }) {
    const started = process.hrtime.bigint();
    for (const [sid, room] of pairs) emitter.in(sid).socketsJoin(room);
    await flush();
    return { seconds: Number(process.hrtime.bigint() - started) / 1e9 };
  },
  async probe({ rooms, k }) {
    rooms.forEach((room, seq) => emitter.to(room).emit(EVENT, payload(k, seq)));
    await flush();
    return {};
  },
  async run({ k, rooms, rate, duration_s }) {
    const total = Math.max(1, Math.round(rate * duration_s));
    const cpu0 = cpuSeconds();
    const start = performance.now();
    let sent = 0;
    while (sent < total) {
      const due = start + (sent / rate) * 1000;
      let now = performance.now();
      if (due > now) {
        await sleep(Math.max(due - now, PACING_TICK_MS));
        now = performance.now();
      } else {
        await yieldToIo();
      }
      const until = Math.min(total, Math.floor(((now - start) / 1000) * rate) + 1);
      for (; sent < until; sent++) emitter.to(rooms[sent % rooms.length]).emit(EVENT, payload(k, sent));
    }
    await flush();
    const elapsed = (performance.now() - start) / 1000;
    return { sent, elapsed_s: elapsed, achieved_rate: sent / elapsed, publish_cpu_s: cpuSeconds() - cpu0 };
  },
  async throughput({ mode, seconds, max_n }) {
    if (mode !== "async") return { n: 0, skipped: "no sync publisher in Node" };
    const batch = 200;
    const cpu0 = cpuSeconds();
    const start = performance.now();
    let n = 0;
    while (n < max_n && performance.now() - start < seconds * 1000) {
      for (let i = 0; i < batch; i++) emitter.to(S4_ROOM).emit(EVENT, payload(0, n + i));
      n += batch;
      await yieldToIo(); // let ioredis write what is queued, as an app would
    }
    await flush();
    const elapsed = (performance.now() - start) / 1000;
    const cpu = cpuSeconds() - cpu0;
    return { n, elapsed_s: elapsed, rate: n / elapsed, cpu_us_per_publish: (cpu / n) * 1e6 };
  },
  async close() {
    if (redis) redis.disconnect();
    redis = emitter = null;
    return {};
  },
};

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => {
  queue = queue.then(async () => {
    const { op, ...request } = JSON.parse(line);
    if (op === "exit") process.exit(0);
    let reply;
    try {
      reply = { ...(await handlers[op](request)), ok: true };
    } catch (err) {
      reply = { ok: false, error: String(err && err.stack ? err.stack : err) };
    }
    reply.cpu_s = cpuSeconds();
    process.stdout.write(JSON.stringify(reply) + "\n");
  });
});
lines.on("close", () => process.exit(0));
