"""Connection-state recovery (issue 11): a socket outlives its connection and its gateway.

* sessions.py — the session store: one record per recoverable socket in a NATS KV
  bucket (TTL = the recovery window), written coalesced, compare-and-set.
* recover.py — the recovery at CONNECT: the client's claim (pid and offset: v4 CONNECT
  payload, v3 add-on handshake query), the session looked up, a takeover of a socket
  still open elsewhere, the replay, and the fresh session when any of it fails.
* the sails.io.js add-on is gateway/static/recovery.js, served at
  `/sailcast/recovery.js` (gateway/pages.py); recover.py sends it `sailcast:session`.

docs/recovery.md, "Sessions and recovery", says what is recovered and when.
"""
