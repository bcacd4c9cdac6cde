'use strict';
// A real npm client against a Sailcast gateway whose requests a Python worker answers
// (publisher.router), driven by tests/e2e/test_sails_clients.py.
//
//   node sails_app.js <url> <stack> <transports> [token] [expect]
//
// stack: sio2 (sails.io.js 1.2.1 + socket.io-client 2.0.3, Engine.IO v3: what the
//        official bundle ships), sio4-shim (sails.io.js 1.2.1 + socket.io-client 4,
//        handed plain options), sio4-raw (socket.io-client 4 alone, virtual requests
//        by hand, as in the Sails docs' "without the SDK" case).
// transports: comma-separated ("websocket" or "polling,websocket").
// token: a JWT sent the way each stack can (io.sails.query / v4 auth payload), or "-".
// expect: "accepted" (default) runs the scenario; "refused" reports the connect error.
//
// Requests: every method on /echo, an unknown route, /fail, join and say in a room,
// /bad (a string through res.json) and /headers (what the worker saw).
// Prints one JSON line per step: connect, jwr (one per request), event, parse
// (raw only), done — or refused. Exits 0 after "done"/"refused".

const [url, stack, transportList, tokenArg, expectArg] = process.argv.slice(2);
const transports = transportList.split(',');
const token = tokenArg && tokenArg !== '-' ? tokenArg : null;
const expect = expectArg || 'accepted';
const SDK_QUERY = '__sails_io_sdk_version=1.2.1&__sails_io_sdk_platform=node&__sails_io_sdk_language=javascript';
const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

function out(step, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ step: step }, fields || {})) + '\n');
}

setTimeout(function () { out('timeout'); process.exit(3); }, 20000).unref();

const PLAIN_OPTIONS = [
  'path', 'query', 'transports', 'reconnection', 'reconnectionAttempts', 'reconnectionDelay',
  'reconnectionDelayMax', 'randomizationFactor', 'timeout', 'multiplex', 'rejectUnauthorized',
  'extraHeaders', 'transportOptions', 'auth',
];

// sails.io.js passes its SailsSocket (non-enumerable accessors) as the options, which
// socket.io-client 4 cannot read: hand it a plain copy (see sails-transcripts.md).
function withPlainOptions(io) {
  const wrapped = function (target, opts) {
    const plain = {};
    PLAIN_OPTIONS.forEach(function (name) {
      if (opts && opts[name] !== undefined) { plain[name] = opts[name]; }
    });
    return io(target, plain);
  };
  return Object.assign(wrapped, io);
}

function open() {
  if (stack === 'sio4-raw') {
    const { io } = require('socket.io-client-v4');
    const opts = { transports: transports, query: SDK_QUERY, reconnection: false };
    if (token) { opts.auth = { token: token }; }
    const socket = io(url, opts);
    return {
      raw: socket,
      on: function (event, fn) { socket.on(event, fn); },
      request: function (method, path, data, cb) {
        socket.emit(method, { method: method, headers: {}, data: data, url: path }, function (jwr) {
          cb(jwr.body, jwr);
        });
      },
      disconnect: function () { socket.disconnect(); },
    };
  }
  const ioImpl = stack === 'sio2'
    ? require('socket.io-client')
    : withPlainOptions(require('socket.io-client-v4').io);
  const io = require('sails.io.js')(ioImpl);
  io.sails.autoConnect = false;
  io.sails.environment = 'production';  // no console chatter on stdout
  io.sails.transports = transports;
  io.sails.reconnection = false;
  if (token) { io.sails.query = 'token=' + token; }
  const socket = io.sails.connect(url);
  return {
    raw: socket._raw,
    on: function (event, fn) { socket.on(event, fn); },
    request: function (method, path, data, cb) { socket[method](path, data, cb); },
    disconnect: function () { socket.disconnect(); },
  };
}

const client = open();

if (expect === 'refused') {
  // socket.io-client 2 reports a refused namespace as 'error', 4 as 'connect_error';
  // then the connection must end (a v2 client would otherwise keep it open)
  let message;
  let closed = false;
  const finish = function () {
    if (message === undefined || !closed) { return; }
    out('refused', { message: message, closed: closed });
    process.exit(0);
  };
  const report = function (err) {
    message = err && err.message !== undefined ? err.message : err;
    finish();
  };
  client.raw.on('error', report);
  client.raw.on('connect_error', report);
  client.raw.on('connect', function () { out('connect', { id: client.raw.id }); process.exit(4); });
  client.raw.io.engine.on('close', function () { closed = true; finish(); });
  return;
}

function request(method, path, data) {
  return new Promise(function (resolve) {
    client.request(method, path, data, function (body, jwr) {
      const shown = {
        method: method, url: path, body: body, statusCode: jwr.statusCode, headers: jwr.headers,
      };
      if (stack !== 'sio4-raw') { shown.error = Boolean(jwr.error); }  // the SDK's jwr.error
      out('jwr', shown);
      resolve(jwr);
    });
  });
}

function next(event) {
  return new Promise(function (resolve) {
    client.raw.once(event, function (data) { out('event', { event: event, data: data }); resolve(data); });
  });
}

async function scenario() {
  for (const method of METHODS) {
    await request(method, '/echo/' + method + '?q=1', { a: 1 });
  }
  await request('get', '/no/such/route', {});
  await request('get', '/fail', {});
  await request('post', '/room/lobby/join', {});
  const chat = next('chat');
  await request('post', '/room/lobby/say', { text: 'hi from ' + stack });
  await chat;
  await request('get', '/bad', {});
  await request('get', '/headers', {});
  if (stack === 'sio4-raw') {
    // Sails' parse errors: into the ack when there is one, else as an event
    await new Promise(function (resolve) {
      client.raw.emit('get', { method: 'get', data: {} }, function (err) { out('parse', { ack: err }); resolve(); });
    });
    const parseEvent = next('sails:parseError');
    client.raw.emit('get', { method: 'get', data: {} });
    await parseEvent;
  }
  out('done', { id: client.raw.id });
  // not from inside the SDK's response callback; exit once the close has been sent
  setImmediate(function () {
    client.raw.io.engine.on('close', function () { process.exit(0); });
    client.disconnect();
  });
}

let started = false;
client.on('connect', function () {
  if (started) { return; }
  started = true;
  const engine = client.raw.io.engine;
  out('connect', { id: client.raw.id, transport: engine.transport.name });
  scenario().catch(function (err) { out('error', { message: String(err && err.stack || err) }); process.exit(2); });
});
