"""uvicorn's WebSocket protocol plus an ASGI extension that sends many text frames in one socket write.

Why: through ASGI every ``websocket.send`` is one message: Starlette checks it, uvicorn's sans-I/O protocol asks
``websockets`` to build the frame, and writes it to the transport, which on uvloop is one ``send(2)`` system
call per frame. In the seed protocol (one frame per tick) the system calls alone were half of the gateway's CPU
and the ASGI/framing path most of the rest (py-spy, 100 clients x 1,000 ticks/s; docs/benchmarks.md).

:class:`FrameWriterProtocol` is uvicorn's ``websockets-sansio`` protocol with one addition, the connection
scope's extension ``scope["extensions"][SEND_TEXTS] = {"send": send_texts, "write": write_texts}``:

* ``async send_texts(texts)`` writes each text as its own, complete WebSocket text frame, all of them in one
  ``transport.write``; it waits while the transport is paused, exactly as uvicorn's ``send`` does;
* ``write_texts(texts) -> bool`` is its synchronous twin: it writes only if it can without waiting, else returns
  ``False`` and writes nothing. The hub uses it to write to idle clients straight from the fan-out instead of
  waking a task per client;
* ``write_text(text) -> bool`` is ``write_texts`` for one text, without compression (``False`` when
  permessage-deflate is negotiated): the batched flush's path, one call per client and frame;
* ``abort()`` drops the connection at once, discarding what is buffered: for a client dropped because it does
  not read, whose close frame would otherwise wait behind everything it has not read (and hold the socket and
  its buffer for as long as the peer keeps its receive window shut).

Nothing changes on the wire: the client sees the same frames in the same order. The frame bytes of a text are
built once and shared by every connection that sends the same ``str`` (the hub queues one object per event for
all subscribers). With permessage-deflate negotiated, frames go through ``websockets`` one by one (compression
is per connection), still in one write.

The app uses the extension when the server offers it and falls back to ``websocket.send`` per frame otherwise
(other servers, uvicorn's own protocols: ``API_WS_PROTOCOL=websockets-sansio``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

if TYPE_CHECKING:
    from api.settings import ApiSettings

#: import string uvicorn resolves for ``ws=`` (a string survives uvicorn's worker spawning)
FRAME_WRITER: str = "api.ws_protocol:FrameWriterProtocol"
#: ASGI scope extension offered by :class:`FrameWriterProtocol`
SEND_TEXTS: str = "md.websocket.send_texts"

_CACHE_BYTES = 4 * 1024 * 1024  # a few seconds of frames: sharing only matters within one fan-out
_frames: dict[str, bytes] = {}
_cached_bytes = 0


def uvicorn_ws(choice: str) -> str:
    """What uvicorn's ``ws=`` gets for an ``API_WS_PROTOCOL`` value (an import string or one of uvicorn's names)."""
    return FRAME_WRITER if choice == "frame-writer" else choice


def uvicorn_ws_options(settings: ApiSettings) -> dict[str, Any]:
    """The WebSocket keyword arguments of ``uvicorn.run`` / ``uvicorn.Config`` for ``settings``."""
    return {
        "ws": uvicorn_ws(settings.ws_protocol),
        "ws_per_message_deflate": settings.ws_per_message_deflate,
        # headroom over the app's own limit, so a message a little too large gets a `too_large` error frame from
        # the app; only one beyond this closes the connection (1009)
        "ws_max_size": transport_max_bytes(settings.ws_max_message_bytes),
    }


def transport_max_bytes(app_max_bytes: int) -> int:
    """The largest message the server reads at all: 4x the app's limit, at least 1 MiB."""
    return max(4 * app_max_bytes, 1 << 20)


def text_frame(text: str) -> bytes:
    """The server-to-client (unmasked, unfragmented) WebSocket text frame carrying ``text``; memoised."""
    global _cached_bytes  # noqa: PLW0603 - one process-wide cache of recent frames, reset when it is full
    frame = _frames.get(text)
    if frame is not None:
        return frame
    payload = text.encode()
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 65536:
        head = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + n.to_bytes(8, "big")
    frame = head + payload
    if _cached_bytes + len(frame) > _CACHE_BYTES:
        _frames.clear()
        _cached_bytes = 0
    _frames[text] = frame
    _cached_bytes += len(frame)
    return frame


class FrameWriterProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol offering the :data:`SEND_TEXTS` extension."""

    def handle_connect(self, event: Request) -> None:
        """As uvicorn, then add the extension to the scope the app will see."""
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope.setdefault("extensions", {})[SEND_TEXTS] = {
                "send": self.send_texts,
                "write": self.write_texts,
                "write_one": self.write_text,
                "abort": self.abort,
            }

    async def send_texts(self, texts: Sequence[str]) -> None:
        """Send every text as one WebSocket text frame, in order, in one socket write.

        Waits while the transport is paused; raises :class:`uvicorn.protocols.utils.ClientDisconnected` when the
        connection is gone or closing.
        """
        await self.writable.wait()
        if not self.write_texts(texts):
            raise ClientDisconnected

    def write_texts(self, texts: Sequence[str]) -> bool:
        """As :meth:`send_texts` but without waiting: ``False`` (nothing written) while the transport is paused
        or the connection is gone or closing, so the caller can queue the texts and let a writer wait."""
        if not self._takes_writes():
            return False
        self._write_frames(texts)
        return True

    def write_text(self, text: str) -> bool:
        """As :meth:`write_texts` with one text, for the batched flush: ``False`` also when permessage-deflate is
        negotiated (the caller then queues the text, and :meth:`write_texts` compresses it for this connection)."""
        if self.conn.extensions or not self._takes_writes():
            return False
        self.transport.write(text_frame(text))
        return True

    def _takes_writes(self) -> bool:
        """Open, not closing, and the transport not paused: a write now goes out without waiting."""
        return (
            self.writable.is_set() and not self.disconnected and not self.close_sent and self.conn.state is State.OPEN
        )

    def abort(self) -> None:
        """Close the connection now without a closing handshake, discarding buffered frames."""
        self.transport.abort()

    def _write_frames(self, texts: Sequence[str]) -> None:
        if not texts:
            return
        if self.conn.extensions:  # compression is per connection: let websockets encode each frame
            for text in texts:
                self.conn.send_text(text.encode())
            self.transport.write(b"".join(self.conn.data_to_send()))
        else:
            self.transport.write(b"".join([text_frame(t) for t in texts]))
