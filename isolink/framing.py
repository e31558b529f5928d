"""The link's framing: every message is a 2-byte big-endian length, then the message.

:class:`FrameReader` is the receiving side as a sans-I/O state machine, as h11 and
terminal/vpcd.py's ``VpcdConnection`` are: feed it whatever bytes the socket gave
(``receive_data``), take the whole messages it returns; it never reads a socket
itself, so the host, the load generator and the tests share it::

    reader = FrameReader(max_message_bytes=4096)
    for message in reader.receive_data(chunk):
        handle(message)
    ...
    reader.close()  # at end of stream: TruncatedFrameError if a message was cut

A length of zero or above the limit is a :class:`OversizedFrameError` /
:class:`EmptyFrameError` at once (the stream cannot be resynchronised after a bad
length, so the connection is closed); a stream ending inside a message is a
:class:`TruncatedFrameError`.  Each names the byte offset where the frame began.
"""

from __future__ import annotations

HEADER_BYTES = 2
MAX_LIMIT = 0xFFFF


class FrameError(ValueError):
    """The byte stream is not a sequence of frames; ``offset`` is where the bad frame began."""

    def __init__(self, message: str, offset: int) -> None:
        self.offset = offset
        super().__init__(f"byte {offset}: {message}")


class EmptyFrameError(FrameError):
    """A length header of zero."""


class OversizedFrameError(FrameError):
    """A length header above the dialect's maximum message size."""

    def __init__(self, size: int, limit: int, offset: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"frame of {size} bytes, above the limit of {limit}", offset)


class TruncatedFrameError(FrameError):
    """The stream ended inside a frame (``pending`` bytes of it had arrived)."""


def frame(message: bytes, max_message_bytes: int = MAX_LIMIT) -> bytes:
    """The bytes to send for one message: its length, then the message."""
    if not 0 < len(message) <= min(max_message_bytes, MAX_LIMIT):
        raise OversizedFrameError(len(message), min(max_message_bytes, MAX_LIMIT), 0) \
            if message else EmptyFrameError("empty message", 0)
    return len(message).to_bytes(HEADER_BYTES, "big") + message


class FrameReader:
    """Bytes in, whole messages out (see the module docstring)."""

    def __init__(self, max_message_bytes: int = MAX_LIMIT) -> None:
        self.max_message_bytes = min(max_message_bytes, MAX_LIMIT)
        self._buf = bytearray()
        self.received = 0  # bytes of whole frames consumed so far (for error offsets)
        self.failed: FrameError | None = None

    def receive_data(self, data: bytes) -> list[bytes]:
        """The messages completed by ``data`` (possibly none); FrameError on a bad header,
        after which the reader refuses more data (the stream has lost its framing)."""
        if self.failed is not None:
            raise self.failed
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos, have = 0, len(buf)  # consumed frames are cut off once, at the end (a read of
        try:  # 64 KiB holds hundreds of frames: cutting each would move the rest each time)
            while have - pos >= HEADER_BYTES:
                size = (buf[pos] << 8) | buf[pos + 1]
                if size == 0:
                    self.failed = EmptyFrameError("length header of zero", self.received)
                    raise self.failed
                if size > self.max_message_bytes:
                    self.failed = OversizedFrameError(size, self.max_message_bytes,
                                                      self.received)
                    raise self.failed
                end = pos + HEADER_BYTES + size
                if have < end:
                    break
                out.append(bytes(buf[pos + HEADER_BYTES:end]))
                self.received += end - pos
                pos = end
        finally:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)

    def close(self) -> None:
        """End of stream: TruncatedFrameError if it ended inside a frame."""
        if self._buf and self.failed is None:
            have = len(self._buf)
            need = (int.from_bytes(self._buf[:HEADER_BYTES], "big") + HEADER_BYTES
                    if have >= HEADER_BYTES else HEADER_BYTES)
            raise TruncatedFrameError(f"stream ended after {have} of {need} bytes of a frame",
                                      self.received)
