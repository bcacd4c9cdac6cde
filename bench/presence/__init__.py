"""Members, counts and presence benchmark (issue 12): ``python -m bench.presence``.

Modules: ``run`` (the command, options, JSON), ``cluster`` (Sailcast gateways on NATS,
Node socket.io on redis), ``clients`` (the client processes) and ``pool`` (the harness's
handle on them), ``members`` (part 1: members/count vs fetchSockets), ``churn`` (part 2:
presence under churn), ``views`` (a member's view of a room vs the truth), ``measure``
(timed series, CPU net of idle), ``people`` (user ids, info, percentiles), ``table``.
"""
