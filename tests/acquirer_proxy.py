"""A tiny asyncio TCP proxy between the back office and `tapsim issuer run`, that misbehaves.

It runs its own event loop in a thread, so a synchronous test (and the blocking acquirer
link) can use it.  Requests (client -> host) are counted frame by frame; while a fault is
active, answers (host -> client) are:

* ``delay``: held ``delay`` seconds, then delivered (late);
* ``drop``: swallowed (the host answered, the acquirer never hears);
* ``garble``: replaced by a frame of random bytes of the same length;
* ``cut``: the connection is closed as soon as an answer arrives (not delivered);
* ``silent``: requests are swallowed too (the host never sees them) — a black hole.

``target`` may change while it runs (the host restarted on another port).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "pass"
        self.delay = 1.0
        self.requests = 0  # request frames seen
        self.faulted = 0  # answers (or requests, when silent) it misbehaved on
        self.on_request: Callable[[int, str], None] | None = None  # (count, MTI)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        def stop() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.call_later(0.05, self._loop.stop)

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(10)

    def cut_all(self) -> None:
        """Close every open connection now."""
        def cut() -> None:
            for w in list(self._writers):
                w.close()
        self._loop.call_soon_threadsafe(cut)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            return
        self._writers.add(up_w)
        tasks = [asyncio.create_task(self._up(reader, up_w)),
                 asyncio.create_task(self._down(up_r, writer))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        for w in (writer, up_w):
            w.close()
            self._writers.discard(w)

    @staticmethod
    async def _frame(reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await reader.readexactly(2)
            body = await reader.readexactly(int.from_bytes(head, "big"))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return head + body

    async def _up(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        while (data := await self._frame(reader)) is not None:
            self.requests += 1
            if self.on_request is not None:
                self.on_request(self.requests, data[2:6].decode("ascii", "replace"))
            if self.mode == "silent":
                self.faulted += 1
                continue
            up.write(data)
            with contextlib.suppress(ConnectionError):
                await up.drain()

    async def _down(self, up: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (data := await self._frame(up)) is not None:
            mode = self.mode
            if mode in ("drop", "silent"):
                self.faulted += 1
                continue
            if mode == "cut":
                self.faulted += 1
                return
            if mode == "garble":
                self.faulted += 1
                data = data[:2] + os.urandom(len(data) - 2)
            if mode == "delay":
                self.faulted += 1
                self._loop.call_later(self.delay, self._late, writer, data)
                continue
            writer.write(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    @staticmethod
    def _late(writer: asyncio.StreamWriter, data: bytes) -> None:
        if not writer.is_closing():
            writer.write(data)
