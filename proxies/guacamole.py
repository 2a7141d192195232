"""The Guacamole protocol, as the VM gateway speaks it to guacd and to the browser.

The VM gateway (:mod:`daas_hub.proxies.gateway`, a hub service running outside
every session account) serves the page ``/services/vm/<target>/`` with
guacamole-common-js and its websocket tunnel. With these helpers it:

- does the guacd handshake itself (``select``, ``args``, ``size``/``audio``/
  ``video``/``image``/``timezone``, ``connect``, ``ready``), so the target's host
  and credentials go to guacd and never to the browser; the browser may only
  choose its screen size;
- then relays whole Guacamole instructions both ways, drops any handshake
  instruction the browser sends, answers the tunnel's pings, and counts only
  mouse, keyboard and clipboard instructions as activity.

The protocol helpers (:func:`encode`, :class:`InstructionParser`,
:func:`connect_values`) are pure and follow the Guacamole protocol reference
("Guacamole protocol", Apache Guacamole manual, chapter 19: element lengths are
counted in Unicode characters).
"""

from __future__ import annotations

import asyncio
import codecs
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

PROTOCOLS = ("rdp", "vnc", "ssh")
#: instructions from the browser that are input by a person
INPUT_OPCODES = frozenset({"mouse", "key", "clipboard", "touch"})
#: instructions only the bridge may send to guacd
HANDSHAKE_OPCODES = frozenset({"select", "connect", "size", "audio", "video", "image", "timezone", "name"})
INTERNAL_OPCODE = ""
#: Guacamole protocol status CLIENT_UNAUTHORIZED (0x0301): the person may no longer use the machine
STATUS_CLIENT_UNAUTHORIZED = "769"


class ProtocolError(ValueError):
    """guacd (or the browser) sent something that is not the Guacamole protocol."""


def encode(opcode: str, *args) -> str:
    """One instruction: ``4.size,4.1024,3.768;``."""
    parts = [opcode, *(str(a) for a in args)]
    return ",".join(f"{len(p)}.{p}" for p in parts) + ";"


class InstructionParser:
    """Splits a character stream into instructions; keeps partial ones for the next feed."""

    def __init__(self, max_length: int = 1 << 22):
        self._buf = ""
        self._max = max_length

    def feed(self, text: str) -> list[tuple[str, list[str]]]:
        """Whole instructions in ``text`` (plus what was left over), as (opcode, args)."""
        self._buf += text
        out = []
        while True:
            parsed = self._next()
            if parsed is None:
                break
            instruction, end = parsed
            out.append(instruction)
            self._buf = self._buf[end:]
        if len(self._buf) > self._max:
            raise ProtocolError("instruction too long")
        return out

    def feed_raw(self, text: str) -> tuple[list[tuple[str, list[str]]], str]:
        """Like :meth:`feed`, also returning the exact text of the whole instructions."""
        before = self._buf + text
        instructions = self.feed(text)
        consumed = len(before) - len(self._buf)
        return instructions, before[:consumed]

    def _next(self):
        buf, pos, elements = self._buf, 0, []
        while True:
            dot = buf.find(".", pos)
            if dot == -1:
                if len(buf) - pos > 12:
                    raise ProtocolError("element length missing")
                return None
            length_text = buf[pos:dot]
            if not length_text.isdigit():
                raise ProtocolError(f"bad element length {length_text[:12]!r}")
            start = dot + 1
            end = start + int(length_text)
            if end >= len(buf):
                return None
            elements.append(buf[start:end])
            terminator = buf[end]
            if terminator == ";":
                return (elements[0], elements[1:]), end + 1
            if terminator != ",":
                raise ProtocolError(f"bad terminator {terminator!r}")
            pos = end + 1


@dataclass(frozen=True)
class Target:
    """A machine the user may open: guacd's protocol and connection parameters."""

    id: str
    title: str
    protocol: str
    parameters: Mapping[str, str] = field(default_factory=dict)

    def public(self) -> dict:
        """What the browser may know: no host, no credentials."""
        return {"id": self.id, "title": self.title, "protocol": self.protocol}


def parse_guacd(text: str) -> tuple[str, int] | None:
    """``host:port`` -> (host, port); None when unset."""
    if not text:
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"the guacd address must be host:port, not {text!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class ClientSize:
    width: int = 1024
    height: int = 768
    dpi: int = 96


def client_size(query: Mapping[str, str]) -> ClientSize:
    """The only thing the browser chooses: its screen size, bounded."""
    def num(name, default, lo, hi):
        try:
            return min(max(int(query.get(name, default)), lo), hi)
        except (TypeError, ValueError):
            return default
    return ClientSize(num("width", 1024, 64, 8192), num("height", 768, 64, 8192), num("dpi", 96, 48, 480))


def connect_values(arg_names: list[str], target: Target) -> list[str]:
    """The ``connect`` values in the order guacd's ``args`` asked for them.

    The first name is the protocol version guacd speaks (``VERSION_1_5_0``); the
    bridge answers with the same version. Parameters the target does not set are
    sent empty (guacd's default).
    """
    values = []
    for i, name in enumerate(arg_names):
        if i == 0 and name.startswith("VERSION_"):
            values.append(name)
        else:
            values.append(target.parameters.get(name, ""))
    return values


async def guacd_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Target,
                          size: ClientSize, *, timeout: float = 15) -> tuple[str, InstructionParser, list]:
    """Select the target's protocol, answer ``args`` and wait for ``ready``.

    Returns guacd's connection id, the parser (holding any bytes already read)
    and instructions that arrived with ``ready``.
    """
    parser = InstructionParser()
    decoder = _Utf8()

    async def next_instruction(pending: list):
        while not pending:
            data = await asyncio.wait_for(reader.read(65536), timeout)
            if not data:
                raise ProtocolError("guacd closed the connection during the handshake")
            pending.extend(parser.feed(decoder.decode(data)))
        return pending.pop(0)

    pending: list = []
    writer.write(encode("select", target.protocol).encode())
    await writer.drain()
    opcode, arg_names = await next_instruction(pending)
    if opcode == "error":
        raise ProtocolError(f"guacd refused the connection: {' '.join(arg_names)}")
    if opcode != "args":
        raise ProtocolError(f"guacd answered {opcode!r} instead of 'args'")
    writer.write("".join([
        encode("size", size.width, size.height, size.dpi),
        encode("audio", "audio/L16"),
        encode("video"),
        encode("image", "image/png", "image/jpeg", "image/webp"),
        encode("timezone", os.environ.get("TZ", "UTC")),
        encode("connect", *connect_values(arg_names, target)),
    ]).encode())
    await writer.drain()
    opcode, args = await next_instruction(pending)
    if opcode == "error":
        raise ProtocolError(f"guacd could not connect to {target.title}: {' '.join(args)}")
    if opcode != "ready" or not args:
        raise ProtocolError(f"guacd answered {opcode!r} instead of 'ready'")
    parser.decoder = decoder
    return args[0], parser, pending


class _Utf8:
    """Incremental UTF-8 decoding: guacd may split a character across reads."""

    def __init__(self):
        self._d = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, data: bytes) -> str:
        return self._d.decode(data)


def new_tunnel_id() -> str:
    return str(uuid.uuid4())
