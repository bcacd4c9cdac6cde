"""Per-room history on JetStream, the gateway's side (docs/recovery.md).

`stream.py`: the history stream, created or reconciled by every gateway at start
(`HistoryStream.ensure`), its epoch, and its state read back (first sequence,
messages and bytes for the gauges).
"""
