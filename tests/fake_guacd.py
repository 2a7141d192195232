"""A stand-in for guacd on loopback, speaking the real Guacamole protocol.

guacd is not packaged for this machine, so the bridge is tested against this:
the server side of the handshake exactly as guacd 1.5 performs it (``select`` ->
``args`` led by ``VERSION_1_5_0``; ``size``, ``audio``, ``video``, ``image``,
``timezone`` -> ``connect`` with the values in ``args`` order -> ``ready`` with a
``$``-prefixed connection id), then a small drawing (``size``, ``rect``,
``cfill``, ``sync``) like guacd's first frame, and a log of everything the
bridge sent afterwards. It connects to no machine.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
import uuid

from daas_hub.proxies.guacamole import InstructionParser, encode

ARGS = {
    "rdp": ["VERSION_1_5_0", "hostname", "port", "domain", "username", "password", "width", "height",
            "dpi", "security", "ignore-cert"],
    "vnc": ["VERSION_1_5_0", "hostname", "port", "password", "color-depth"],
    "ssh": ["VERSION_1_5_0", "hostname", "port", "username", "password", "font-size"],
}
HANDSHAKE = ("size", "audio", "video", "image", "timezone", "name")


class FakeGuacd:
    def __init__(self):
        self.connections: list[dict] = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                outer._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server_class, self._handler = Server, Handler
        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @contextlib.contextmanager
    def down(self):
        """guacd not answering for the duration, then back on the same port (the
        module's other tests keep their guacd whatever order they run in)."""
        self.__exit__()
        try:
            yield
        finally:
            self.server = self._server_class(("127.0.0.1", self.port), self._handler)
            self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
            self.thread.start()

    def _serve(self, sock):
        conn = {"handshake": [], "after": [], "connect": None, "protocol": None}
        self.connections.append(conn)
        parser = InstructionParser()
        pending: list = []

        def next_instruction():
            while not pending:
                data = sock.recv(65536)
                if not data:
                    return None
                pending.extend(parser.feed(data.decode()))
            return pending.pop(0)

        op, args = next_instruction() or (None, None)
        if op != "select" or args[0] not in ARGS:
            sock.sendall(encode("error", "Bad select", "768").encode())
            return
        conn["protocol"] = protocol = args[0]
        sock.sendall(encode("args", *ARGS[protocol]).encode())
        while True:
            item = next_instruction()
            if item is None:
                return
            op, args = item
            conn["handshake"].append((op, args))
            if op == "connect":
                conn["connect"] = dict(zip(ARGS[protocol], args, strict=False))
                break
            if op not in HANDSHAKE:
                sock.sendall(encode("error", f"Unexpected {op}", "768").encode())
                return
        sock.sendall((encode("ready", f"${uuid.uuid4()}")
                      + encode("size", 0, 640, 400)
                      + encode("rect", 0, 0, 0, 640, 400) + encode("cfill", 14, 0, 40, 90, 160, 255)
                      + encode("rect", 0, 40, 40, 200, 120) + encode("cfill", 14, 0, 230, 190, 30, 255)
                      + encode("sync", 1)).encode())
        while True:
            item = next_instruction()
            if item is None:
                return
            conn["after"].append(item)
