"""Watch the readers: a daemon thread publishing card insertions and removals.

The thread blocks in ``SCardGetStatusChange`` (readers plus the PnP pseudo-reader, so
readers plugged in later are watched too) and calls the subscriber with a
:class:`CardEvent` on each change. Events carry no card data: the UI reacts to
``inserted`` by asking for a read, which is authorised and audited like any read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from smartcard import scard

from drivers.cps_vitale.errors import CardError
from drivers.cps_vitale.pcsc import PNP_NOTIFICATION, PcscContext


@dataclass(frozen=True)
class CardEvent:
    kind: str
    """``inserted``, ``removed``, ``mute``, ``reader_added``, ``reader_removed`` or
    ``monitor_error`` (pcscd stopped: the monitor retries every few seconds)."""
    reader: str
    atr: str = ""
    at: float = 0.0
    message: str = ""


Subscriber = Callable[[CardEvent], None]


class CardMonitor:
    """Start with :meth:`start`, stop with :meth:`stop` (joins within about a second)."""

    def __init__(
        self,
        publish: Subscriber,
        poll_ms: int = 1000,
        retry_s: float = 3.0,
        *,
        hide_virtual: bool = False,
    ):
        self.publish = publish
        self.hide_virtual = hide_virtual
        self.poll_ms = poll_ms
        self.retry_s = retry_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._context: PcscContext | None = None
        self.running = threading.Event()
        self.last_error: CardError | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="card-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        context = self._context
        if context is not None:
            context.cancel()
        if self._thread is not None:
            self._thread.join(timeout=3)

    def _emit(self, kind: str, reader: str, atr: bytes = b"", message: str = "") -> None:
        self.publish(CardEvent(kind, reader, atr.hex().upper(), time.time(), message))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._context = PcscContext(hide_virtual=self.hide_virtual)
                self.last_error = None
                self._watch(self._context)
            except CardError as exc:
                if self.last_error is None or self.last_error.code != exc.code:
                    self._emit("monitor_error", "", message=exc.message)
                self.last_error = exc
                self.running.clear()
                self._stop.wait(self.retry_s)
            finally:
                if self._context is not None:
                    self._context.close()
                    self._context = None
        self.running.clear()

    def _watch(self, context: PcscContext) -> None:
        present: dict[str, bool] = {}
        states: dict[str, int] = {}
        first = True
        while not self._stop.is_set():
            readers = context.readers()
            for gone in set(present) - set(readers):
                if present.pop(gone):
                    self._emit("removed", gone)
                self._emit("reader_removed", gone)
                states.pop(gone, None)
            for name in readers:
                if name not in present:
                    present[name] = False
                    states[name] = scard.SCARD_STATE_UNAWARE
                    if not first:
                        self._emit("reader_added", name)
            self.running.set()
            known = dict(states)
            known[PNP_NOTIFICATION] = len(readers) << 16
            changed, result = context.status_change(known, self.poll_ms)
            first = False
            if not changed:
                continue
            for name, (event, atr) in result.items():
                if name == PNP_NOTIFICATION or name not in present:
                    continue
                states[name] = event & ~scard.SCARD_STATE_CHANGED
                is_present = bool(event & scard.SCARD_STATE_PRESENT)
                if is_present and not present[name]:
                    kind = "mute" if event & scard.SCARD_STATE_MUTE else "inserted"
                    self._emit(kind, name, atr)
                elif present[name] and not is_present:
                    self._emit("removed", name)
                present[name] = is_present
