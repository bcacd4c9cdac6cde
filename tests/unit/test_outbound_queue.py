"""The queue half of gateway.outbound.OutboundQueue: the asyncio.Queue behaviour
python-engineio relies on (long-polls wait in `get`, `close(wait=True)` in `join`),
and its bounds. No socket is attached, so every packet takes the queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engineio import packet as eio_packet

from gateway.outbound import CLOSE_WAIT_S, OutboundQueue, frame_of, ws_frame


def make_queue(max_messages: int = 100, max_bytes: int = 10_000) -> tuple[OutboundQueue, list[str]]:
    slow: list[str] = []
    queue = OutboundQueue(
        max_messages=max_messages,
        max_bytes=max_bytes,
        on_slow=lambda sock, reason: slow.append(reason),
    )
    return queue, slow


def message(text: str) -> Any:
    return eio_packet.Packet(eio_packet.MESSAGE, data=text)


async def test_fifo_and_get_nowait_on_empty() -> None:
    queue, _ = make_queue()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    for i in range(5):
        queue.put_nowait(message(str(i)))
    queue.put_nowait(None)
    assert queue.qsize() == 6
    got = [queue.get_nowait() for _ in range(6)]
    assert [p.data for p in got[:5]] == ["0", "1", "2", "3", "4"]
    assert got[5] is None
    assert queue.empty()


async def test_a_waiting_get_is_woken_by_a_put() -> None:
    queue, _ = make_queue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait(message("x"))
    assert (await asyncio.wait_for(getter, 1)).data == "x"


async def test_a_cancelled_get_hands_its_packet_to_the_next_waiter() -> None:
    queue, _ = make_queue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(message("x"))  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    assert (await asyncio.wait_for(second, 1)).data == "x"
    assert first.cancelled()


async def test_join_waits_for_task_done_and_is_bounded() -> None:
    queue, _ = make_queue()
    await asyncio.wait_for(queue.join(), 0.1)  # nothing unfinished: at once
    queue.put_nowait(message("x"))
    joiner = asyncio.ensure_future(queue.join())
    await asyncio.sleep(0)
    queue.get_nowait()
    assert not joiner.done()
    queue.task_done()
    await asyncio.wait_for(joiner, 1)
    with pytest.raises(ValueError, match="too many times"):
        queue.task_done()
    queue.put_nowait(message("never taken"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await queue.join()  # a client that never polls again does not hold close() forever
    assert loop.time() - started >= CLOSE_WAIT_S * 0.9


async def test_bounds_cut_a_socket_off_once() -> None:
    queue, slow = make_queue(max_messages=3)
    for i in range(5):
        queue.put_nowait(message(str(i)))
    assert slow == ["queue"]
    assert queue.qsize() == 3
    queue, slow = make_queue(max_bytes=10)
    queue.put_nowait(message("x" * 20))
    assert slow == ["queue"]


def test_frames_of_text_and_binary_packets() -> None:
    assert frame_of(message("2[1]")) == b"\x81\x0542[1]"
    assert frame_of(eio_packet.Packet(eio_packet.PING)) == b"\x81\x012"
    assert frame_of(eio_packet.Packet(eio_packet.MESSAGE, data=b"\x00\x01")) == b"\x82\x02\x00\x01"
    assert ws_frame(b"a" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert ws_frame(b"a" * 70_000)[:2] == b"\x81\x7f"
