'use strict';
// One npm client that a worker disconnects, driven by
// tests/e2e/test_forced_disconnect_clients.py (issue 12: a disconnect with a reason).
//
//   node disconnect_client.js <url> <stack> <transports> [<token>]
//
// stack:
//   v4           socket.io-client 4 alone
//   sails-sio2   sails.io.js 1.2.1 + socket.io-client 2.0.3 (Engine.IO v3)
//   sails-v4     sails.io.js 1.2.1 + socket.io-client 4 (handed plain options)
// transports: comma-separated ("websocket", "polling" or "polling,websocket").
// token: a JWT (v4: auth {token}; sails: the query `token`), or "-".
//
// Prints one JSON object per line: {"step":"connect","id","recovered","transport"} on
// every connect, {"step":"event","event","args"} for `sailcast:disconnect` and `m`
// events in arrival order, {"step":"disconnect","reason"}. Reads commands from stdin,
// one a line ("reconnect": connect the same client object again, v4 only); exits when
// stdin closes. The client never reconnects by itself.

const [url, stack, transportList, tokenArg] = process.argv.slice(2);
const transports = transportList.split(',');
const token = tokenArg && tokenArg !== '-' ? tokenArg : null;
const SDK_QUERY = '__sails_io_sdk_version=1.2.1&__sails_io_sdk_platform=node&__sails_io_sdk_language=javascript';
const EVENTS = ['sailcast:disconnect', 'm'];
const PLAIN_OPTIONS = ['path', 'query', 'transports', 'reconnection', 'auth', 'forceNew', 'multiplex'];

function out(step, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ step: step }, fields)) + '\n');
}

function listen(on, raw) {
  on('connect', function () {
    out('connect', {
      id: raw().id,
      recovered: raw().recovered === undefined ? null : raw().recovered,
      transport: raw().io.engine.transport.name,
    });
  });
  on('disconnect', function (reason) { out('disconnect', { reason: String(reason) }); });
  EVENTS.forEach(function (name) {
    on(name, function () { out('event', { event: name, args: Array.prototype.slice.call(arguments) }); });
  });
}

function startV4() {
  const { io } = require('socket.io-client-v4');
  const options = { transports: transports, query: SDK_QUERY, reconnection: false };
  if (token) { options.auth = { token: token }; }
  const socket = io(url, options);
  listen(function (event, fn) { socket.on(event, fn); }, function () { return socket; });
  return {
    stop: function () { socket.disconnect(); },
    reconnect: function () { socket.connect(); },
  };
}

function startSails(v4) {
  let ioImpl = require('socket.io-client');
  if (v4) {
    const raw = require('socket.io-client-v4').io;
    ioImpl = Object.assign(function (target, opts) {  // sails.io.js passes its SailsSocket
      const plain = {};
      PLAIN_OPTIONS.forEach(function (name) {
        if (opts && opts[name] !== undefined) { plain[name] = opts[name]; }
      });
      return raw(target, plain);
    }, raw);
  }
  const io = require('sails.io.js')(ioImpl);
  io.sails.autoConnect = false;
  io.sails.environment = 'production';  // no console chatter on stdout
  io.sails.transports = transports;
  io.sails.reconnection = false;
  if (token) { io.sails.query = 'token=' + token; }
  const socket = io.sails.connect(url);
  listen(function (event, fn) { socket.on(event, fn); }, function () { return socket._raw; });
  return { stop: function () { socket.disconnect(); }, reconnect: null };
}

const client = stack === 'v4' ? startV4() : startSails(stack === 'sails-v4');
let pending = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', function (chunk) {
  pending += chunk;
  let nl;
  while ((nl = pending.indexOf('\n')) !== -1) {
    const cmd = pending.slice(0, nl).trim();
    pending = pending.slice(nl + 1);
    if (cmd && client[cmd]) { client[cmd](); }
  }
});
process.stdin.on('end', function () {
  try { client.stop(); } catch (err) { /* already gone */ }
  setTimeout(function () { process.exit(0); }, 50);
});
