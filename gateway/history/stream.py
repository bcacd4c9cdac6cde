"""The history stream: created or reconciled by every gateway at start.

One JetStream stream per deployment prefix (`shared.history.stream_name`) captures
`<p>.h.>` (what publishers send for history rooms), keeps at most the largest rule's
count per subject and the largest rule's age, and re-publishes every stored message on
`<p>.r.<room>` with `Nats-Sequence` / `Nats-Last-Sequence` headers, so the gateways keep
their one core subscription per room and learn each message's position for free.
The rules' canonical text goes into the stream's metadata (`METADATA_KEY`): publishers
read it there, so they are never configured twice.

Many gateways may start at once: `ensure` reads the stream, creates it when missing
(on "already in use" reads it again) and updates it only when what we manage differs
(a concurrent update with the same config is harmless). The epoch
(`shared.history.epoch_of`) names one stream instance: a deleted and recreated stream
has another, so its positions are never taken for a continuation of the old ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Final

from nats.aio.client import Client as NatsClient
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import RePublish, StorageType, StreamConfig, StreamInfo
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from gateway.settings import HistorySettings
from shared.errors import TransportError
from shared.history import METADATA_KEY, HistoryRules, epoch_of, stream_name
from shared.subjects import Subjects

log = logging.getLogger(__name__)

STREAM_NAME_IN_USE: Final = 10058
"""JetStream's err_code for a create whose name exists with another config."""
ENSURE_DEADLINE_S: Final = 60.0
"""How long a start keeps trying while JetStream is there but not ready (a cluster
electing its leaders, a stream deleted under us); then it fails, naming JetStream."""
ENSURE_RETRY_S: Final = 0.5
JS_API_TIMEOUT_S: Final = 5.0
REFRESH_INTERVAL_S: Final = 10.0
"""How often a gateway re-reads the stream (gauges, epoch, rules set by other gateways)."""
FIRST_SEQ_CACHE_S: Final = 1.0
"""How long `first_seq` trusts its last read: recovery asks it for every reconnect."""
AGE_TOLERANCE_S: Final = 0.001
"""max_age and duplicate_window travel as nanoseconds; float noise is not a change."""


def desired_config(subjects: Subjects, settings: HistorySettings) -> StreamConfig:
    """What the stream must be for these rules and settings. The duplicate window is
    capped at the longest age (JetStream refuses a window longer than max_age)."""
    rules = settings.rules
    return StreamConfig(
        name=stream_name(subjects.prefix),
        description="Sailcast per-room history (docs/recovery.md)",
        subjects=[subjects.history_all],
        max_msgs_per_subject=rules.max_msgs,
        max_age=rules.max_age_s,
        allow_direct=True,
        duplicate_window=min(settings.history_duplicate_window_s, rules.max_age_s),
        num_replicas=settings.history_replicas,
        storage=StorageType(settings.history_storage),
        republish=RePublish(src=subjects.history_all, dest=f"{subjects.prefix}.r.>"),
        metadata={METADATA_KEY: rules.text},
    )


def differences(current: StreamConfig, desired: StreamConfig) -> list[str]:
    """The managed fields where `current` is not `desired` (empty: nothing to do).
    Fields we do not manage (and the server's own metadata keys) are ignored."""
    diffs: list[str] = []
    if sorted(current.subjects or []) != sorted(desired.subjects or []):
        diffs.append("subjects")
    if current.max_msgs_per_subject != desired.max_msgs_per_subject:
        diffs.append("max_msgs_per_subject")
    if abs((current.max_age or 0.0) - (desired.max_age or 0.0)) > AGE_TOLERANCE_S:
        diffs.append("max_age")
    if not current.allow_direct:
        diffs.append("allow_direct")
    if abs((current.duplicate_window or 0.0) - (desired.duplicate_window or 0.0)) > (
        AGE_TOLERANCE_S
    ):
        diffs.append("duplicate_window")
    if (current.num_replicas or 1) != (desired.num_replicas or 1):
        diffs.append("num_replicas")
    if _storage(current) != _storage(desired):
        diffs.append("storage")
    cur, want = current.republish, desired.republish
    if (
        cur is None
        or want is None
        or (cur.src, cur.dest) != (want.src, want.dest)
        or cur.headers_only
    ):
        diffs.append("republish")
    if (current.metadata or {}).get(METADATA_KEY) != (desired.metadata or {}).get(METADATA_KEY):
        diffs.append("metadata")
    return diffs


def merged_config(current: StreamConfig, desired: StreamConfig) -> StreamConfig:
    """The update to send: the stream's config as it is, with our fields set. Storage
    cannot change in place (JetStream refuses), so the stream keeps its own; the
    server's metadata keys are kept beside ours."""
    metadata = dict(current.metadata or {})
    metadata.update(desired.metadata or {})
    return current.evolve(
        subjects=desired.subjects,
        max_msgs_per_subject=desired.max_msgs_per_subject,
        max_age=desired.max_age,
        allow_direct=True,
        duplicate_window=desired.duplicate_window,
        num_replicas=desired.num_replicas,
        republish=desired.republish,
        metadata=metadata,
    )


def _storage(config: StreamConfig) -> str:
    storage = config.storage or StorageType.FILE
    return str(getattr(storage, "value", storage))


def _created(info: StreamInfo) -> str:
    return info.created.isoformat() if info.created is not None else ""


def _rules_of(config: StreamConfig, fallback: HistoryRules) -> HistoryRules:
    """The rules the stream says it holds (another gateway may have set newer ones)."""
    text = (config.metadata or {}).get(METADATA_KEY)
    if text is None:
        return fallback
    try:
        return HistoryRules.parse(text)
    except ValueError:
        log.warning("history stream metadata %r does not parse; using our own rules", text)
        return fallback


@dataclass(frozen=True, slots=True)
class StreamView:
    """One reading of the stream: what `HistoryStream` exposes, replaced whole."""

    epoch: str
    rules: HistoryRules
    max_msgs_per_subject: int
    max_age_s: float
    first_seq: int
    messages: int
    bytes: int


class HistoryStream:
    """The history stream as this gateway knows it. Build with `ensure`."""

    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        settings: HistorySettings,
        info: StreamInfo,
        action: str,
    ) -> None:
        self.name = stream_name(subjects.prefix)
        self.subjects = subjects
        self.action = action
        """What `ensure` did: "created", "unchanged" or "updated"."""
        self._js = js
        self._settings = settings
        self._view = self._read(info)
        self._read_at = time.monotonic()
        self._first_seq_lock = asyncio.Lock()

    # -- what the rest of the gateway reads -------------------------------------------
    @property
    def epoch(self) -> str:
        return self._view.epoch

    @property
    def rules(self) -> HistoryRules:
        return self._view.rules

    @property
    def max_msgs_per_subject(self) -> int:
        return self._view.max_msgs_per_subject

    @property
    def max_age_s(self) -> float:
        return self._view.max_age_s

    @property
    def messages(self) -> int:
        return self._view.messages

    @property
    def bytes(self) -> int:
        return self._view.bytes

    async def first_seq(self) -> int:
        """The stream's first stored sequence, read at most every FIRST_SEQ_CACHE_S
        however many reconnecting sockets ask at once (they wait for one read).
        TransportError when JetStream cannot be read."""
        if time.monotonic() - self._read_at >= FIRST_SEQ_CACHE_S:
            async with self._first_seq_lock:
                if time.monotonic() - self._read_at >= FIRST_SEQ_CACHE_S:
                    await self.refresh()
        return self._view.first_seq

    async def refresh(self) -> bool:
        """Read the stream again (recreate it if it is gone); True when the epoch
        changed: the stream was recreated, and old positions mean nothing now."""
        before = self._view.epoch
        try:
            info = await self._js.stream_info(self.name)
        except NotFoundError:
            log.warning("history stream %s is gone; creating it again", self.name)
            info, _ = await _ensure(self._js, self.subjects, self._settings)
        except (APIError, NatsTimeoutError, TimeoutError) as exc:
            raise TransportError(f"JetStream: cannot read stream {self.name}: {exc}") from exc
        self._view = self._read(info)
        self._read_at = time.monotonic()
        if self._view.epoch != before:
            log.warning(
                "history stream %s was recreated: epoch %s -> %s (older offsets are void)",
                self.name,
                before,
                self._view.epoch,
            )
            return True
        return False

    async def keep_fresh(self, interval_s: float = REFRESH_INTERVAL_S) -> None:
        """Refresh every interval until cancelled; a failed read is logged and retried
        at the next interval (the gateway keeps serving on what it last read)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("history stream %s not refreshed: %s", self.name, exc)

    def _read(self, info: StreamInfo) -> StreamView:
        config, state = info.config, info.state
        return StreamView(
            epoch=epoch_of(self.name, _created(info)),
            rules=_rules_of(config, self._settings.rules),
            max_msgs_per_subject=config.max_msgs_per_subject,
            max_age_s=float(config.max_age or 0.0),
            first_seq=state.first_seq,
            messages=state.messages,
            bytes=state.bytes,
        )

    @classmethod
    async def ensure(
        cls, nc: NatsClient, subjects: Subjects, settings: HistorySettings
    ) -> HistoryStream:
        """Create the stream, or bring it in line with our settings; safe when many
        gateways run this at once. TransportError (naming JetStream) when it cannot."""
        js = nc.jetstream(timeout=JS_API_TIMEOUT_S)
        info, action = await _ensure(js, subjects, settings)
        stream = cls(js, subjects, settings, info, action)
        log.info(
            "history stream %s %s (epoch %s, rules %s, R%d, %s)",
            stream.name,
            action,
            stream.epoch,
            stream.rules.text,
            info.config.num_replicas or 1,
            _storage(info.config),
        )
        return stream


async def _ensure(
    js: JetStreamContext, subjects: Subjects, settings: HistorySettings
) -> tuple[StreamInfo, str]:
    desired = desired_config(subjects, settings)
    name = desired.name
    last: Exception | None = None
    deadline = time.monotonic() + ENSURE_DEADLINE_S
    while True:
        try:
            return await _ensure_once(js, desired)
        except ServiceUnavailableError as exc:
            if exc.code is None:  # no responders: nothing serves the JetStream API
                raise TransportError(
                    f"JetStream is not enabled on the NATS server: cannot create the "
                    f"history stream {name} (run nats-server with -js, or set no "
                    "SAILCAST_HISTORY)"
                ) from exc
            last = exc  # JetStream is there but not ready (a leader being elected)
        except (NatsTimeoutError, TimeoutError) as exc:
            last = exc
        except _Retry as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TransportError(
                f"JetStream: cannot create the history stream {name} within "
                f"{ENSURE_DEADLINE_S:g}s: {last}"
            ) from last
        log.info("history stream %s not ready yet (%s); trying again", name, last)
        await asyncio.sleep(ENSURE_RETRY_S)


class _Retry(Exception):
    """The stream changed under us (deleted between create and read): go round again."""


async def _ensure_once(js: JetStreamContext, desired: StreamConfig) -> tuple[StreamInfo, str]:
    """Read; create when missing; on "already in use" (another gateway won the race
    with another config) read again; update only what differs."""
    name = desired.name
    assert name is not None
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        try:
            # JetStream answers an identical concurrent create with success too
            return await js.add_stream(desired), "created"
        except APIError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                if isinstance(exc, ServiceUnavailableError):
                    raise
                raise TransportError(
                    f"JetStream refused the history stream {name}: {exc.description or exc}"
                ) from exc
        try:
            info = await js.stream_info(name)
        except NotFoundError as exc:
            raise _Retry(f"stream {name} vanished between create and read") from exc
    diffs = differences(info.config, desired)
    if "storage" in diffs:
        log.warning(
            "history stream %s keeps %s storage: JetStream cannot change it in place "
            "(delete the stream to move it to %s)",
            name,
            _storage(info.config),
            _storage(desired),
        )
        diffs.remove("storage")
    if not diffs:
        return info, "unchanged"
    log.info("history stream %s: updating %s", name, ", ".join(diffs))
    try:
        info = await js.update_stream(merged_config(info.config, desired))
    except NotFoundError as exc:
        raise _Retry(f"stream {name} vanished before its update") from exc
    except APIError as exc:
        if isinstance(exc, ServiceUnavailableError):
            raise
        raise TransportError(
            f"JetStream refused to update the history stream {name} ({', '.join(diffs)}): "
            f"{exc.description or exc}"
        ) from exc
    return info, "updated"
