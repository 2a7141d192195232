"""Tell real input apart from background traffic in a VNC (RFB 3.8) client stream.

noVNC keeps asking for screen updates and answering fences while a desktop tab
is merely open; only key, pointer and clipboard messages mean someone is there.
:class:`InputDetector` follows the client-to-server byte stream (RFC 6143, with
the extensions noVNC uses) across websocket messages and says whether a chunk
held input. Pure: no I/O, no clock.
"""

from __future__ import annotations

import struct

#: client message types that are a person at the keyboard or mouse
INPUT_TYPES = frozenset({4, 5, 6, 255})  # KeyEvent, PointerEvent, ClientCutText, QEMU (extended key)

_HANDSHAKE = "version"


class InputDetector:
    """Feed client-to-server bytes; :meth:`feed` returns True when they held input.

    Fixed-size and length-prefixed messages are followed exactly. On a message
    type it does not know, it stops parsing and from then on reports every chunk
    as input: erring towards "someone is there" never stops a session in use.
    """

    def __init__(self):
        self._buf = b""
        self._state = _HANDSHAKE
        self.lost = False
        self.input_messages = 0

    def feed(self, data: bytes) -> bool:
        if self.lost:
            return True
        self._buf += bytes(data)
        found = False
        while True:
            step = self._step()
            if step is None:
                break
            consumed, is_input = step
            self._buf = self._buf[consumed:]
            if is_input:
                found = True
                self.input_messages += 1
            if self.lost:
                return True
        return found

    def _step(self):
        """(bytes consumed, is input) for the next complete item, or None to wait."""
        buf = self._buf
        if self._state == "version":  # "RFB 003.008\n"
            if len(buf) < 12:
                return None
            self._state = "security"
            return 12, False
        if self._state == "security":  # the chosen security type, one byte
            if len(buf) < 1:
                return None
            self._state = "clientinit"
            return 1, False
        if self._state == "clientinit":  # shared flag, one byte
            if len(buf) < 1:
                return None
            self._state = "messages"
            return 1, False
        if not buf:
            return None
        kind = buf[0]
        size = _message_size(kind, buf)
        if size is _UNKNOWN:
            self.lost = True
            return len(buf), True
        if size is None or len(buf) < size:
            return None
        return size, kind in INPUT_TYPES


_UNKNOWN = object()


def _message_size(kind: int, buf: bytes):
    """The size of the client message starting ``buf``, None if not yet known."""
    if kind == 0:  # SetPixelFormat
        return 20
    if kind == 2:  # SetEncodings: 1 type, 1 pad, u16 count, s32 each
        if len(buf) < 4:
            return None
        return 4 + 4 * struct.unpack(">H", buf[2:4])[0]
    if kind == 3:  # FramebufferUpdateRequest
        return 10
    if kind == 4:  # KeyEvent
        return 8
    if kind == 5:  # PointerEvent
        return 6
    if kind == 6:  # ClientCutText: 3 pad, s32 length (negative: extended clipboard)
        if len(buf) < 8:
            return None
        return 8 + abs(struct.unpack(">i", buf[4:8])[0])
    if kind == 150:  # EnableContinuousUpdates
        return 10
    if kind == 248:  # ClientFence: 3 pad, u32 flags, u8 length, payload
        if len(buf) < 9:
            return None
        return 9 + buf[8]
    if kind == 251:  # SetDesktopSize: pad, w, h, u8 screens, pad, 16 bytes each
        if len(buf) < 8:
            return None
        return 8 + 16 * buf[6]
    if kind == 255:  # QEMU client message; subtype 0 is the extended key event
        if len(buf) < 2:
            return None
        return 12 if buf[1] == 0 else _UNKNOWN
    return _UNKNOWN
