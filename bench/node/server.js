// Reference (c): Node socket.io v4 with @socket.io/redis-adapter.
// Usage: node server.js --redis-url URL --key PREFIX
// Prints the gateway contract's ready line: {"event":"ready","host":...,"port":N}.
"use strict";

const http = require("node:http");
const { parseArgs } = require("node:util");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const Redis = require("ioredis");

const { values: args } = parseArgs({
  options: {
    "redis-url": { type: "string" },
    key: { type: "string" },
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "0" },
  },
});

const pubClient = new Redis(args["redis-url"]);
const subClient = pubClient.duplicate();
const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ["websocket"],
  serveClient: false,
  adapter: createAdapter(pubClient, subClient, { key: args.key }),
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
