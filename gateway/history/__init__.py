"""Per-room history on JetStream, the gateway's side (docs/recovery.md).

`stream.py`: the history stream, created or reconciled by every gateway at start
(`HistoryStream.ensure`), its epoch, and its state read back (first sequence,
messages and bytes for the gauges).
`feed.py`: the live path of history rooms (positions, duplicates, gap repair, the
offsets) and the recovery API (`join_position`, `replay_for`, `go_live`);
`direct_get.py`: batched Direct Gets, a room's stored messages after a position.
"""
