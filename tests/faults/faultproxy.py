"""A loopback TCP proxy that injects network faults (PostgreSQL, Redis, RabbitMQ, providers) for tests.

Put it between a process and a real server (`DATABASE_URL`/`CELERY_BROKER_URL` point at the
proxy's port) and switch modes while traffic flows; the real server is never touched:

    proxy = FaultProxy("127.0.0.1", 5432).start()     # pass: bytes are forwarded both ways
    proxy.refuse()      # new connections are refused (nothing listens: ECONNREFUSED)
    proxy.drop()        # existing connections are cut (both sides see the socket close)
    proxy.blackhole()   # new connections are accepted but never forwarded, and existing ones
                        # stall (bytes are held, not lost): a hung or unreachable server
    proxy.resume()      # back to pass: stalled connections flow again, held ones are closed
    proxy.close_on_request(n)  # the next n requests are read, then their connection is closed
    proxy.stop()

`cut()` is `refuse()` + `drop()` (the server is down); `hang()` is `blackhole()` + `drop()`
(the server is gone and new connections hang). Each connection uses two pump threads; a test
opens a few dozen at most. Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

PASS, REFUSE, BLACKHOLE = "pass", "refuse", "blackhole"


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv() on it
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One proxied connection: client <-> upstream, pumped by two threads."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.closed = threading.Event()

    def start(self) -> None:
        for src, dst, name in ((self.client, self.upstream, "up"), (self.upstream, self.client, "down")):
            threading.Thread(target=self._pump, args=(src, dst), name=f"faultproxy-{name}", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.closed.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if src is self.client and self.proxy._take_close_on_request():
                    return  # the request was read and never forwarded; `finally` closes both ends
                # A stall holds the bytes here until resume() (or until the link is dropped).
                while not self.proxy._flowing.wait(0.05):
                    if self.closed.is_set():
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            _close(self.client)
            _close(self.upstream)
            self.proxy._forget(self)


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, port: int = 0,
                 connect_timeout: float = 5.0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = port
        self.connect_timeout = connect_timeout
        self.mode = PASS
        self.accepted = 0
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._held: list[socket.socket] = []  # black-holed: accepted, never forwarded
        self._close_next = 0  # close_on_request(): requests still to be answered by a close
        self._closed_on_request = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stopped = False

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._listen()
        return self

    def stop(self) -> None:
        self._stopped = True
        self._unlisten()
        self._flowing.set()
        self.drop()
        self._release_held()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def active(self) -> int:
        """Connections currently proxied (black-holed ones not included)."""
        with self._lock:
            return len(self._links)

    # -- fault controls --------------------------------------------------------------------
    def refuse(self) -> None:
        """New connections are refused; existing ones are left alone (see `cut`)."""
        self.mode = REFUSE
        self._unlisten()

    def drop(self) -> None:
        """Close every existing connection, both ends."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()

    def blackhole(self) -> None:
        """New connections are accepted and never forwarded; existing connections stall."""
        self.mode = BLACKHOLE
        self._flowing.clear()
        if self._listener is None:
            self._listen()

    def cut(self) -> None:
        """The server is down: refuse new connections and drop existing ones."""
        self.refuse()
        self.drop()

    def hang(self) -> None:
        """The server is unreachable: existing connections are dropped, new ones hang."""
        self.blackhole()
        self.drop()

    def close_on_request(self, n: int) -> None:
        """The next `n` requests (data from a client, on any connection) are read and answered by
        closing the connection: a keep-alive connection the server closed as the request came."""
        with self._lock:
            self._close_next = n

    @property
    def closed_on_request(self) -> int:
        with self._lock:
            return self._closed_on_request

    def _take_close_on_request(self) -> bool:
        with self._lock:
            if self._close_next <= 0:
                return False
            self._close_next -= 1
            self._closed_on_request += 1
            return True

    def resume(self) -> None:
        """Forward again: stalled connections flow; black-holed ones are closed (clients reconnect)."""
        self.mode = PASS
        self._release_held()
        self._flowing.set()
        if self._listener is None:
            self._listen()

    # -- internals -------------------------------------------------------------------------
    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))  # resume() re-binds the same port after refuse()
        sock.listen(256)
        sock.settimeout(0.05)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._acceptor = threading.Thread(target=self._accept_loop, args=(sock,), name="faultproxy-accept",
                                          daemon=True)
        self._acceptor.start()

    def _unlisten(self) -> None:
        sock, self._listener = self._listener, None
        if sock is not None:
            sock.close()
            if self._acceptor is not None:
                self._acceptor.join(2)

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self.accepted += 1
            if self.mode == BLACKHOLE:
                with self._lock:
                    self._held.append(client)
                continue
            threading.Thread(target=self._connect, args=(client,), name="faultproxy-connect", daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=self.connect_timeout)
        except OSError:
            _close(client)
            return
        upstream.settimeout(None)
        link = _Link(self, client, upstream)
        with self._lock:
            self._links.add(link)
        link.start()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _release_held(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for sock in held:
            _close(sock)
