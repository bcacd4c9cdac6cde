"""The Sailcast gateway: a stateless Socket.IO server that fans rooms out over NATS.

Needs the `gateway` extra (aiohttp, prometheus-client, pyjwt).
"""
