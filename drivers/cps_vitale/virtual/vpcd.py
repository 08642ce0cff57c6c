"""The vpcd socket protocol, card side: how a Python virtual card sits in a real reader.

``vsmartcard-vpcd`` is a PC/SC reader driver loaded by ``pcscd``; it listens on TCP port
35963 (one port per slot) and treats whoever connects as the card in that slot. Each message,
both ways, is a 2-byte big-endian length and a payload. One-byte payloads from the reader are
control codes (0 power off, 1 power on, 2 reset, 4 send the ATR); longer ones are APDUs, each
answered with the response APDU. Connecting inserts the card, closing the socket removes it.

vpcd binds its port on every interface. A pcscd kept in its own network namespace (only
``lo``: the tests do this) is reachable from nowhere else; ``netns`` (a namespace file such
as ``/proc/PID/ns/net``) then makes the card connect from inside that namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import threading
import time

from drivers.cps_vitale.errors import SimulatorError
from drivers.cps_vitale.virtual.cards import VirtualCard

VPCD_PORT = 35963
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4


CLONE_NEWNET = 0x40000000


def connect_in_namespace(address: tuple[str, int], netns: str | None) -> socket.socket:
    """A TCP connection to ``address`` made from inside the network namespace ``netns``.

    ``setns`` moves only the calling thread, so a short-lived thread joins the namespace and
    opens the socket; the socket stays in that namespace whichever thread then uses it.
    Needs CAP_SYS_ADMIN (root).
    """
    if netns is None:
        return socket.create_connection(address, timeout=2)
    made: list[socket.socket] = []
    failed: list[OSError] = []

    def join_and_connect() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns {netns}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            made.append(socket.create_connection(address, timeout=2))
        except OSError as exc:
            failed.append(exc)

    worker = threading.Thread(target=join_and_connect, name="vpcd-netns")
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return made[0]


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray()
    while len(buffer) < size:
        # vpcd writes the length and the payload in two send() calls without TCP_NODELAY:
        # acknowledging at once spares each APDU a 40 ms Nagle / delayed-ACK stall.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = sock.recv(size - len(buffer))
        if not chunk:
            return None
        buffer += chunk
    return bytes(buffer)


class VpcdLink:
    """One virtual card in one vpcd slot; :meth:`insert` and :meth:`remove` like a hand would.

    The dialogue runs in a daemon thread. ``card.remove_after_apdus`` makes the link close
    the socket instead of answering that APDU: the card is pulled out mid-read.
    """

    def __init__(
        self,
        card: VirtualCard,
        host: str = "127.0.0.1",
        port: int = VPCD_PORT,
        netns: str | None = None,
    ):
        self.card = card
        self.host = host
        self.port = port
        self.netns = netns
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.inserted = threading.Event()
        self.stopped = threading.Event()

    def insert(self, timeout_s: float = 5.0) -> None:
        """Connect to vpcd (the card enters the reader); returns once pcscd powered it."""
        deadline = time.monotonic() + timeout_s
        last: OSError | None = None
        while time.monotonic() < deadline:
            try:
                self._sock = connect_in_namespace((self.host, self.port), self.netns)
                break
            except OSError as exc:
                last = exc
                time.sleep(0.1)
        else:
            raise SimulatorError(detail=f"vpcd {self.host}:{self.port}: {last}")
        self._sock.settimeout(None)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stopped.clear()
        self.card.answered = 0
        self._thread = threading.Thread(target=self._serve, name="vpcd-card", daemon=True)
        self._thread.start()
        if not self.inserted.wait(max(deadline - time.monotonic(), 0.5)):
            self.remove()
            raise SimulatorError(detail=f"vpcd {self.host}:{self.port} did not query the card")

    def remove(self) -> None:
        """Pull the card out (close the socket)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self.inserted.clear()
        self.stopped.set()

    def wait(self) -> None:
        """Block until the card is removed (or vpcd goes away)."""
        self.stopped.wait()

    def _send(self, sock: socket.socket, payload: bytes) -> None:
        sock.sendall(struct.pack(">H", len(payload)) + payload)

    def _serve(self) -> None:
        sock = self._sock
        try:
            while sock is not None:
                head = _recv_exact(sock, 2)
                if head is None:
                    break
                payload = _recv_exact(sock, struct.unpack(">H", head)[0])
                if payload is None:
                    break
                if len(payload) == 1:
                    if payload[0] == CTRL_ATR:
                        self._send(sock, self.card.atr_bytes())
                        self.inserted.set()
                    elif payload[0] == CTRL_ON:
                        self.card.power_on()
                    elif payload[0] == CTRL_OFF:
                        self.card.power_off()
                    elif payload[0] == CTRL_RESET:
                        self.card.reset()
                    continue
                limit = self.card.remove_after_apdus
                if limit is not None and self.card.answered >= limit:
                    break  # pulled out mid-read: the APDU never gets an answer
                if self.card.delay_s:
                    time.sleep(self.card.delay_s)
                self._send(sock, self.card.process(payload))
        except OSError:
            pass
        finally:
            if self._sock is sock and sock is not None:
                self._sock = None
                with contextlib.suppress(OSError):
                    sock.close()
            self.inserted.clear()
            self.stopped.set()
