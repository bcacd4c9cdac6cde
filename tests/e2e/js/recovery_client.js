'use strict';
// One long-lived npm client that reconnects by itself, driven by
// tests/e2e/test_recovery.py (the test cuts its connection through a TCP proxy).
//
//   node recovery_client.js <url> <stack> <events> [<token>]
//
// stack:
//   v4            socket.io-client 4 (its own connection-state recovery)
//   sails-addon   sails.io.js 1.2.1 + socket.io-client 2.0.3 + the add-on the gateway
//                 serves at /sailcast/recovery.js (fetched from <url>, as a page would)
//   sails-stock   sails.io.js 1.2.1 + socket.io-client 2.0.3, nothing else
// events: comma-separated event names to listen to (sails.io.js has no catch-all).
// token: v4 only, sent as auth {token} (the before-connect JWT check).
//
// Prints one JSON object per line: {"step":"connect","id","recovered"} on every
// (re)connect, {"step":"session",...} for the add-on's sailcast:session,
// {"step":"event","event","args"} for every event in arrival order, and
// {"step":"disconnect","reason"}. Reads commands from stdin, one a line ("bounce": v4
// only, `socket.disconnect()` then `socket.connect()`); exits when stdin closes.

const http = require('http');

const [url, stack, eventList, token] = process.argv.slice(2);
const events = eventList.split(',').filter(Boolean);
const SDK_QUERY = '__sails_io_sdk_version=1.2.1&__sails_io_sdk_platform=node&__sails_io_sdk_language=javascript';
const RECONNECT = { reconnectionDelay: 100, reconnectionDelayMax: 300 };

function out(step, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ step: step }, fields)) + '\n');
}

function fetchText(target) {
  return new Promise(function (resolve, reject) {
    http.get(target, function (res) {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', function (chunk) { body += chunk; });
      res.on('end', function () {
        if (res.statusCode !== 200) { reject(new Error(target + ': ' + res.statusCode)); }
        else { resolve(body); }
      });
    }).on('error', reject);
  });
}

function startV4() {
  const { io } = require('socket.io-client-v4');
  const options = { transports: ['websocket'], query: SDK_QUERY };
  if (token) { options.auth = { token: token }; }
  const socket = io(url, Object.assign(options, RECONNECT));
  socket.on('connect_error', function (err) { out('connect_error', { message: err.message }); });
  socket.on('connect', function () {
    out('connect', { id: socket.id, recovered: socket.recovered });
  });
  socket.on('disconnect', function (reason) { out('disconnect', { reason: reason }); });
  socket.onAny(function (event) {
    out('event', { event: event, args: Array.prototype.slice.call(arguments, 1) });
  });
  return {
    stop: function () { socket.disconnect(); },
    bounce: function () {  // a goodbye, then a connect of the same socket
      socket.disconnect();
      setTimeout(function () { socket.connect(); }, 50);
    },
  };
}

async function startSails(addon) {
  const sio = require('socket.io-client');
  const io = require('sails.io.js')(sio);
  io.sails.autoConnect = false;  // connected below, once the add-on is in
  if (addon) {
    const source = await fetchText(url + '/sailcast/recovery.js');
    const mod = { exports: {} };
    new Function('module', 'exports', source)(mod, mod.exports);
    mod.exports(sio);
  }
  io.sails.url = url;
  io.sails.environment = 'production';
  io.sails.transports = ['websocket'];
  io.sails.reconnection = true;
  io.sails.reconnectionDelay = RECONNECT.reconnectionDelay;
  io.sails.reconnectionDelayMax = RECONNECT.reconnectionDelayMax;
  const socket = io.socket = io.sails.connect();
  socket.on('connect', function () {
    out('connect', { id: socket._raw.id, recovered: socket.recovered === undefined ? null : socket.recovered });
  });
  socket.on('disconnect', function (reason) { out('disconnect', { reason: String(reason) }); });
  socket.on('sailcast:session', function (session) {
    out('session', { session: session, id: socket._raw.id, recovered: socket.recovered === true });
  });
  events.forEach(function (name) {
    socket.on(name, function () {
      out('event', { event: name, args: Array.prototype.slice.call(arguments) });
    });
  });
  return { stop: function () { socket.disconnect(); }, bounce: null };
}

(async function main() {
  const client = stack === 'v4' ? startV4() : await startSails(stack === 'sails-addon');
  let pending = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', function (chunk) {  // one command a line: "bounce"
    pending += chunk;
    let nl;
    while ((nl = pending.indexOf('\n')) !== -1) {
      const cmd = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      if (cmd && client[cmd]) { client[cmd](); }
    }
  });
  process.stdin.on('end', function () {
    client.stop();
    setTimeout(function () { process.exit(0); }, 50);
  });
})().catch(function (err) {
  out('error', { message: String(err && err.stack || err) });
  process.exit(1);
});
