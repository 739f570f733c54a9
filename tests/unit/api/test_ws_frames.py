"""``api.ws_protocol.text_frame``: the frames the gateway writes itself must parse as what ``websockets`` sends."""

from __future__ import annotations

from collections.abc import Generator

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from api.ws_protocol import text_frame


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
