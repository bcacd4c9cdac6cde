"""Presence events (docs/presence.md, "Presence events"): which rooms have them
(`rules.py`), one room's cluster-wide state merged from every holder's facts, pure
(`state.py`), this gateway's own members of a room and what it last told them
(`local.py`), and the service wiring both to NATS and the local sockets (`service.py`).
The wire format is `shared/presence.py`."""
