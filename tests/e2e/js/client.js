'use strict';
// One real npm client, driven step by step by tests/e2e/test_sails_io_client.py.
//
//   node client.js <url> <stack> <transports>
//
// stack:
//   sio2       sails.io.js 1.2.1 + socket.io-client 2.0.3 (what the official bundle
//              ships: Engine.IO v3)
//   sio4-shim  sails.io.js 1.2.1 + socket.io-client 4, handed plain options (the SDK's
//              options are non-enumerable accessors that socket.io-client 4 skips)
//   sio4-raw   socket.io-client 4 alone, sending the virtual request by hand
// transports: comma-separated, e.g. "websocket" or "polling,websocket".
//
// Prints one JSON object per line: {"step":"connect",...}, then after the server's
// "announce" event {"step":"event",...} and the virtual request's {"step":"jwr",...},
// {"step":"upgrade",...} when polling upgrades, and {"step":"done"} last.

const [url, stack, transportList] = process.argv.slice(2);
const transports = transportList.split(',');
const SDK_QUERY = '__sails_io_sdk_version=1.2.1&__sails_io_sdk_platform=node&__sails_io_sdk_language=javascript';

function out(step, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ step: step }, fields)) + '\n');
}

setTimeout(function () {
  out('timeout', {});
  process.exit(3);
}, 20000).unref();

const PLAIN_OPTIONS = [
  'path', 'query', 'transports', 'reconnection', 'reconnectionAttempts', 'reconnectionDelay',
  'reconnectionDelayMax', 'randomizationFactor', 'timeout', 'multiplex', 'rejectUnauthorized',
  'extraHeaders', 'transportOptions',
];

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

// A uniform view of the stack under test: raw socket.io socket + how to make a request.
function open() {
  if (stack === 'sio4-raw') {
    const { io } = require('socket.io-client-v4');
    const socket = io(url, { transports: transports, query: SDK_QUERY, reconnection: false });
    return {
      raw: function () { return socket; },
      on: function (event, fn) { socket.on(event, fn); },
      get: function (path, data, cb) {
        socket.emit('get', { method: 'get', headers: {}, data: data, url: path }, function (jwr) {
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
  io.sails.url = url;
  io.sails.environment = 'production';  // no console chatter on stdout
  io.sails.transports = transports;
  io.sails.reconnection = false;
  return {
    raw: function () { return io.socket._raw; },
    on: function (event, fn) { io.socket.on(event, fn); },
    get: function (path, data, cb) { io.socket.get(path, data, cb); },
    disconnect: function () { io.socket.disconnect(); },
  };
}

const client = open();
const pending = new Set(['jwr']);
if (transports.length > 1) { pending.add('upgrade'); }

function finished(what) {
  pending.delete(what);
  if (pending.size === 0) {
    out('done', {});
    // not from inside the SDK's response callback: it unregisters the callback only
    // after calling it, and a disconnect in between would call it a second time
    setImmediate(function () { client.disconnect(); });
  }
}

client.on('connect', function () {
  const raw = client.raw();
  const engine = raw.io.engine;
  out('connect', { id: raw.id, engineId: engine.id, transport: engine.transport.name });
  if (pending.has('upgrade')) {
    if (engine.transport.name === 'websocket') {
      out('upgrade', { transport: 'websocket' });
      finished('upgrade');
    } else {
      engine.on('upgrade', function (transport) {
        out('upgrade', { transport: transport.name });
        finished('upgrade');
      });
    }
  }
});

client.on('announce', function (msg) {
  out('event', { data: msg });
  client.get('/x?q=1', { a: 1 }, function (body, jwr) {
    out('jwr', {
      body: body,
      statusCode: jwr.statusCode,
      headers: jwr.headers,
      transport: client.raw().io.engine.transport.name,
    });
    finished('jwr');
  });
});

client.on('disconnect', function () {
  if (pending.size) { out('disconnect', {}); }
});
