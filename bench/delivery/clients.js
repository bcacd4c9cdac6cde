'use strict';
// Clients of the delivery benchmark (bench/delivery/driver.py starts one process per kind).
//
//   node clients.js '<json config>'
//
// config: {url, kind: "v4" | "sails", count, first (global index of the first client),
//          rooms: [room names] (client i joins rooms[i % rooms.length]),
//          addonUrl (sails: the gateway's /sailcast/recovery.js, or null),
//          killEveryS, jitter (fraction), offlineS, connectBatch}
//
// Talks JSON lines: stdout {"event": "ready" | "reported" | "log", ...}; stdin commands
// "go" (start the forced disconnects), "calm" (stop them), "report <path>" (write what
// every client saw to <path> as JSON, then print {"event":"reported"}).
//
// Every client joins its room with a sails virtual request `post /bench/join {room}`
// (sails.io.js: io.socket.post; socket.io-client v4: the same packet by hand), which a
// bench worker (Sailcast) or the Node reference server answers with a join; it joins
// again after every reconnect that did not resume its session.

const fs = require('node:fs');
const http = require('node:http');
const vm = require('node:vm');

const cfg = JSON.parse(process.argv[2]);
const SDK_QUERY = {
  __sails_io_sdk_version: '1.2.1',
  __sails_io_sdk_platform: 'node',
  __sails_io_sdk_language: 'javascript',
};
const EVENT = 'm';
const SESSION_EVENT = 'sailcast:session'; // the add-on's "who am I now" (docs/recovery.md)
const SESSION_WAIT_MS = 2000;
const JOIN_RETRY_MS = 500;

// Sub-millisecond wall-clock time (a replay often arrives in the same ms as the connect).
function now() { return performance.timeOrigin + performance.now(); }

function out(event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ event: event }, fields || {})) + '\n');
}

let chaos = false;
const clients = [];

function rand(lo, hi) { return lo + Math.random() * (hi - lo); }

function nextKillDelayMs() {
  const base = cfg.killEveryS * 1000;
  return rand(base * (1 - cfg.jitter), base * (1 + cfg.jitter));
}

// -- one client, whatever its library ---------------------------------------------------

function Client(index, room) {
  this.index = index;
  this.room = room;
  this.roomIndex = cfg.rooms.indexOf(room);
  this.recv = [];          // flat: n, t_ms, n, t_ms, ...
  this.connects = [];      // [t_ms, recovered (bool), joined_t_ms | null]
  this.disconnects = [];   // [t_ms, reason, forced (bool)]
  this.foreign = 0;        // events of another room (must stay 0)
  this.joinFailures = 0;
  this.connectErrors = 0;
  this.joined = false;
  this.connected = false;
  this.killTimer = null;
  this.forcedAt = 0;
  this.sessionWait = null;
  this.sessionMissing = false;
}

Client.prototype.onMessage = function (msg) {
  if (!msg || typeof msg !== 'object') { return; }
  if (msg.r !== this.roomIndex) { this.foreign++; return; }
  this.recv.push(msg.n, now());
};

Client.prototype.onConnect = function (recovered) {
  const entry = [now(), !!recovered, null];
  this.connects.push(entry);
  this.connected = true;
  if (recovered) {
    entry[2] = entry[0];
    this.joined = true;
    this.afterReady();
  } else {
    this.joined = false;
    this.join(entry);
  }
};

Client.prototype.join = function (entry) {
  const self = this;
  this.request('/bench/join', { room: this.room }, function (ok) {
    if (!self.connected || self.connects[self.connects.length - 1] !== entry) { return; }
    if (ok) {
      entry[2] = now();
      self.joined = true;
      self.afterReady();
    } else {
      self.joinFailures++;
      setTimeout(function () {
        if (self.connected && self.connects[self.connects.length - 1] === entry) { self.join(entry); }
      }, JOIN_RETRY_MS);
    }
  });
};

Client.prototype.onDisconnect = function (reason) {
  const t = now();
  const forced = this.forcedAt > 0 && t - this.forcedAt < 1000;
  this.disconnects.push([t, String(reason), forced]);
  this.forcedAt = 0;
  this.connected = false;
  this.joined = false;
  if (this.killTimer) { clearTimeout(this.killTimer); this.killTimer = null; }
};

Client.prototype.afterReady = function () {
  maybeReady();
  if (chaos) { this.scheduleKill(nextKillDelayMs()); }
};

Client.prototype.scheduleKill = function (delayMs) {
  const self = this;
  if (this.killTimer) { clearTimeout(this.killTimer); }
  this.killTimer = setTimeout(function () {
    self.killTimer = null;
    if (!chaos || !self.connected) { return; }
    self.forcedAt = now();
    self.closeTransport();
  }, delayMs);
};

Client.prototype.report = function () {
  return {
    index: this.index, kind: cfg.kind, room: this.room, recv: this.recv,
    connects: this.connects, disconnects: this.disconnects, foreign: this.foreign,
    join_failures: this.joinFailures, connect_errors: this.connectErrors,
  };
};

const reconnectOptions = {
  transports: ['websocket'],
  reconnection: true,
  reconnectionDelay: cfg.offlineS * 1000,
  reconnectionDelayMax: cfg.offlineS * 1000,
  randomizationFactor: 0,
  timeout: 10000,
};

// -- socket.io-client v4 ------------------------------------------------------------------

function openV4(client) {
  const { io } = require('socket.io-client-v4');
  const socket = io(cfg.url, Object.assign({ forceNew: true, query: SDK_QUERY }, reconnectOptions));
  client.request = function (url, data, cb) {
    socket.timeout(10000).emit('post', { method: 'post', headers: {}, data: data, url: url },
      function (err, jwr) { cb(!err && jwr && jwr.statusCode === 200); });
  };
  client.closeTransport = function () { socket.io.engine.close(); };
  client.close = function () { socket.disconnect(); };
  socket.on(EVENT, function (msg) { client.onMessage(msg); });
  socket.on('connect', function () { client.onConnect(socket.recovered === true); });
  socket.on('disconnect', function (reason) { client.onDisconnect(reason); });
  socket.on('connect_error', function () {
    client.connectErrors++;
    // Refused by the server (e.g. a draining gateway): socket.io-client 4 does not retry
    // that by itself; an app does, and so does this one, after the same delay.
    if (!socket.active) {
      setTimeout(function () { socket.connect(); }, cfg.offlineS * 1000);
    }
  });
}

// -- sails.io.js 1.2.1 on socket.io-client 2.0.3 (+ the add-on when the gateway has it) --

let sailsIo = null;
let addon = 'not requested';

function fetchText(url) {
  return new Promise(function (resolve) {
    http.get(url, function (res) {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', function (chunk) { body += chunk; });
      res.on('end', function () { resolve({ status: res.statusCode, body: body }); });
    }).on('error', function (err) { resolve({ status: 0, body: String(err) }); });
  });
}

async function loadSails() {
  const io = require('sails.io.js')(require('socket.io-client'));
  io.sails.autoConnect = false;
  io.sails.environment = 'production';
  io.sails.useCORSRouteToGetCookie = false;
  if (cfg.addonUrl) {
    const got = await fetchText(cfg.addonUrl);
    if (got.status === 200) {
      // A browser script loaded after sails.io.js; in Node it exports install(io)
      // (`require(file)(io)`), in a page it installs itself on the global `io`: both
      // are offered, as the script's own wrapper decides.
      const mod = { exports: {} };
      globalThis.io = io;
      const run = vm.compileFunction(got.body, ['module', 'exports'], { filename: 'recovery.js' });
      run.call(globalThis, mod, mod.exports);
      if (typeof mod.exports === 'function') { mod.exports(io); }
      addon = 'loaded';
    } else {
      addon = 'absent (HTTP ' + got.status + '): stock sails.io.js';
    }
  }
  sailsIo = io;
}

function openSails(client) {
  const withAddon = addon === 'loaded';
  const sock = sailsIo.sails.connect(cfg.url, Object.assign({ multiplex: false }, reconnectOptions));
  client.request = function (url, data, cb) {
    sock.post(url, data, function (body, jwr) { cb(jwr && jwr.statusCode === 200); });
  };
  client.closeTransport = function () {
    if (sock._raw && sock._raw.io && sock._raw.io.engine) { sock._raw.io.engine.close(); }
  };
  client.close = function () { sock.disconnect(); };
  sock.on(EVENT, function (msg) { client.onMessage(msg); });
  sock.on('connect_error', function () { client.connectErrors++; });
  sock.on('error', function () { client.connectErrors++; });
  sock.on('disconnect', function (reason) {
    if (client.sessionWait) { clearTimeout(client.sessionWait.timer); client.sessionWait = null; }
    client.onDisconnect(reason);
  });
  if (withAddon) {
    // Whether the session was resumed is what the add-on's session event says.
    sock.on(SESSION_EVENT, function (info) {
      const wait = client.sessionWait;
      if (!wait) { return; }
      clearTimeout(wait.timer);
      client.sessionWait = null;
      client.onConnect(!!(info && info.recovered));
    });
  }
  sock.on('connect', function () {
    // A gateway without recovery sends no session event: after one connect without
    // it, joins are not delayed waiting for it again.
    if (!withAddon || client.sessionMissing) { client.onConnect(false); return; }
    client.sessionWait = {
      timer: setTimeout(function () {
        client.sessionWait = null;
        client.sessionMissing = true;
        client.onConnect(false);
      }, SESSION_WAIT_MS),
    };
  });
}

// -- the process ----------------------------------------------------------------------------

let readySent = false;
let opened = 0;
function maybeReady() {
  if (readySent || opened < cfg.count) { return; }
  if (clients.every(function (c) { return c.joined; })) {
    readySent = true;
    out('ready', { clients: clients.length, addon: addon });
  }
}

function waitJoined(batch) {
  return new Promise(function (resolve) {
    const check = setInterval(function () {
      if (batch.every(function (c) { return c.joined; })) { clearInterval(check); resolve(); }
    }, 20);
  });
}

async function main() {
  if (cfg.kind === 'sails') { await loadSails(); }
  for (let i = 0; i < cfg.count; i += cfg.connectBatch) {
    const batch = [];
    for (let j = i; j < Math.min(cfg.count, i + cfg.connectBatch); j++) {
      const index = cfg.first + j;
      const client = new Client(index, cfg.rooms[index % cfg.rooms.length]);
      clients.push(client);
      batch.push(client);
      if (cfg.kind === 'v4') { openV4(client); } else { openSails(client); }
    }
    opened = clients.length;
    await waitJoined(batch);
  }
  maybeReady();
}

const readline = require('node:readline');
readline.createInterface({ input: process.stdin }).on('line', function (line) {
  const [cmd, arg] = line.trim().split(' ');
  if (cmd === 'go') {
    chaos = true;
    // First kills spread over one period, so the disconnects are not synchronized.
    clients.forEach(function (c) { c.scheduleKill(rand(0, cfg.killEveryS * 1000)); });
  } else if (cmd === 'calm') {
    chaos = false;
    clients.forEach(function (c) { if (c.killTimer) { clearTimeout(c.killTimer); c.killTimer = null; } });
  } else if (cmd === 'status') {
    const connected = clients.filter(function (c) { return c.connected && c.joined; }).length;
    out('status', { connected: connected, clients: clients.length });
  } else if (cmd === 'report') {
    fs.writeFileSync(arg, JSON.stringify({ addon: addon, clients: clients.map(function (c) { return c.report(); }) }));
    clients.forEach(function (c) { c.close(); });
    out('reported', {});
  } else if (cmd === 'exit') {
    process.exit(0);
  }
}).on('close', function () { process.exit(0); });

main().catch(function (err) { out('error', { error: String(err && err.stack || err) }); process.exit(1); });
