"""The engine: Engine.IO v3/v4 and Socket.IO v2/v4 for the gateway (see api.py)."""
