"""``api.ws_protocol``: the frames the gateway writes itself must parse as what ``websockets`` sends; the uvicorn
WebSocket options of settings."""

from __future__ import annotations

from collections.abc import Generator

import pytest
import uvicorn
from uvicorn.importer import import_from_string
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from api.settings import ApiSettings
from api.ws_protocol import FrameWriterProtocol, text_frame, uvicorn_ws_options


def _parse(data: bytes) -> Frame:
    """Parse one server-to-client frame with websockets' own (client-side) parser."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    gen: Generator[None, None, Frame] = Frame.parse(reader.read_exact, mask=False)
    try:
        next(gen)
    except StopIteration as done:
        frame: Frame = done.value
        assert not reader.buffer, "nothing may follow the frame"
        return frame
    raise AssertionError("frame incomplete")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 300_000])
def test_text_frame_parses_as_one_complete_text_message(size: int) -> None:
    text = ("x" * (size - 1) + "é")[:size] if size else ""
    frame = _parse(text_frame(text))
    assert frame.opcode is Opcode.TEXT
    assert frame.fin is True
    assert (frame.rsv1, frame.rsv2, frame.rsv3) == (False, False, False)
    assert frame.data.decode() == text


def test_text_frame_equals_what_websockets_serialises() -> None:
    for text in ('{"type":"tick"}', "ü" * 200, "a" * 70_000):
        assert text_frame(text) == Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def test_the_same_text_object_gives_the_same_bytes_object() -> None:
    text = '{"type":"tick","data":{"ticker":"SYNTH"}}' + "!"  # built at run time, like the hub's frames
    assert text_frame(text) is text_frame(text)


def test_uvicorn_ws_options_follow_the_settings() -> None:
    settings = ApiSettings(ws_protocol="frame-writer", ws_per_message_deflate=True, ws_max_message_bytes=4096)
    options = uvicorn_ws_options(settings)
    # the transport reads up to 4x the app's limit (at least 1 MiB), so a message a little too large gets an error
    # frame from the app instead of a 1009 close
    assert options == {
        "ws": "api.ws_protocol:FrameWriterProtocol",
        "ws_per_message_deflate": True,
        "ws_max_size": 1 << 20,
    }
    assert uvicorn_ws_options(ApiSettings(ws_max_message_bytes=512 * 1024))["ws_max_size"] == 2 * 1024 * 1024
    config = uvicorn.Config("api.main:app", **options)  # the keywords uvicorn takes
    assert import_from_string(config.ws) is FrameWriterProtocol  # as Config.load resolves it
    assert uvicorn_ws_options(ApiSettings(ws_protocol="websockets-sansio"))["ws"] == "websockets-sansio"
