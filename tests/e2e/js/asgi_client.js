'use strict';
// sails.io.js 1.2.1 (socket.io-client 2.0.3, as its bundle ships) against a gateway
// whose requests a FastAPI app answers through the ASGI bridge; driven by
// tests/e2e/test_asgi_sails_io.py.
//
//   node asgi_client.js <url>
//
// Prints one JSON object per line: {"step":"get","jwr":…}, {"step":"subscribe","jwr":…},
// {"step":"ack","ack":…} (a client event), then {"step":"user","msg":…} when the
// broadcast the test publishes after "subscribe" arrives, and {"step":"done"}.

const [url] = process.argv.slice(2);
const io = require('sails.io.js')(require('socket.io-client'));
io.sails.url = url;
io.sails.environment = 'production';
io.sails.transports = ['websocket'];
io.sails.reconnection = false;

function out(step, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ step: step }, fields)) + '\n');
}

setTimeout(function () {
  out('timeout', {});
  process.exit(3);
}, 20000).unref();

io.socket.on('user', function (msg) {
  out('user', { msg: msg });
  out('done', {});
  setImmediate(function () { io.socket.disconnect(); });
});

io.socket.on('connect', function () {
  io.socket.get('/users/3?q=x', function (body, jwr) {
    out('get', { jwr: { body: jwr.body, headers: jwr.headers, statusCode: jwr.statusCode }, id: io.socket._raw.id });
    io.socket._raw.emit('typing', { on: true }, function (ack) {
      out('ack', { ack: ack });
      io.socket.post('/users/7/subscribe', {}, function (body2, jwr2) {
        out('subscribe', { jwr: { body: jwr2.body, statusCode: jwr2.statusCode } });
      });
    });
  });
});
