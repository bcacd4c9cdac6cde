/*
 * Sailcast connection-state recovery for sails.io.js (socket.io-client 2, Engine.IO v3).
 * Served by every Sailcast gateway at /sailcast/recovery.js; load it right after
 * sails.io.js (and set io.sails.reconnection = true). docs/recovery.md,
 * "sails.io.js: the add-on", says exactly what it changes:
 *
 *  1. before every (re)connect of a socket.io-client Manager, the handshake query gets
 *     __sailcast_recovery=1, and once known __sailcast_pid and __sailcast_offset;
 *  2. every event a Sailcast gateway sends such a socket ends with one extra argument
 *     (the event's position "<epoch>:<seq>", or null): it is popped before any handler
 *     sees the event, and a position is remembered as the socket's offset. Only once
 *     the connection's first event was `sailcast:session`: a server that is not
 *     Sailcast (or has recovery off) adds nothing, and nothing is popped;
 *  3. the `sailcast:session` event ({pid, sid, recovered}) the gateway sends right
 *     after connect sets the pid, `socket.id` (the recovered id, not the transport's)
 *     and `recovered` on the raw socket and on io.socket.
 *
 * With socket.io-client 3+ (which has recovery of its own) it does nothing.
 * Browser: a plain <script> after sails.io.js. Node: require(file)(io).
 */
(function (root, install) {
  if (typeof module === 'object' && module && module.exports) {
    module.exports = install;
  } else if (root && root.io) {
    install(root.io);
  }
})(typeof self !== 'undefined' ? self : this, function install(io) {
  'use strict';
  var PARAMS = ['__sailcast_recovery', '__sailcast_pid', '__sailcast_offset'];
  var SESSION_EVENT = 'sailcast:session';
  if (!io || !io.Manager || !io.Socket || io.protocol !== 4 || io.__sailcastRecovery) {
    return io; // not socket.io-client 2 (v3+ recovers by itself), or installed already
  }
  io.__sailcastRecovery = true;

  function withRecovery(query, state) {
    var kept = [];
    String(query || '').replace(/^\?/, '').split('&').forEach(function (pair) {
      if (pair && PARAMS.indexOf(decodeURIComponent(pair.split('=')[0])) === -1) {
        kept.push(pair);
      }
    });
    kept.push('__sailcast_recovery=1');
    if (state.pid) { kept.push('__sailcast_pid=' + encodeURIComponent(state.pid)); }
    if (state.offset) { kept.push('__sailcast_offset=' + encodeURIComponent(state.offset)); }
    return kept.join('&');
  }

  var open = io.Manager.prototype.open;
  io.Manager.prototype.open = io.Manager.prototype.connect = function (fn, opts) {
    var state = this.__sailcast || (this.__sailcast = { pid: null, offset: null });
    if (this.readyState.indexOf('open') === -1) {
      state.active = false; // until this connection's sailcast:session
      var query = this.opts.query;
      if (query && typeof query === 'object') { // engine.io-client takes both forms
        var pairs = [];
        Object.keys(query).forEach(function (k) {
          pairs.push(encodeURIComponent(k) + '=' + encodeURIComponent(query[k]));
        });
        query = pairs.join('&');
      }
      this.opts.query = withRecovery(query, state);
    }
    return open.call(this, fn, opts);
  };

  var onevent = io.Socket.prototype.onevent;
  io.Socket.prototype.onevent = function (packet) {
    var state = this.io && this.io.__sailcast;
    var args = packet.data;
    if (state && args && !state.active && args[0] === SESSION_EVENT && args.length === 3) {
      state.active = true; // a Sailcast gateway: it adds a last argument from now on
    }
    if (state && state.active && args && args.length > 1) {
      var last = args.pop(); // the gateway added it: a position, or null
      if (typeof last === 'string') { state.offset = last; }
      if (args[0] === SESSION_EVENT && args[1] && typeof args[1] === 'object') {
        var session = args[1];
        state.pid = session.pid;
        this.id = session.sid;
        this.recovered = session.recovered === true;
        if (io.socket && io.socket._raw === this) {
          io.socket.recovered = this.recovered;
        }
      }
    }
    return onevent.call(this, packet);
  };
  return io;
});
