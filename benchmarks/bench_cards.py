"""Card reading at the counter: Vitale read + patient form fill, with the virtual cards.

Goal (issue 11): reading a Vitale card and filling the patient form takes under 1 s. The
script runs the real pcscd (its own, with a private vpcd reader configuration, unless one is
already running with the vpcd readers), the real pyscard stack and the virtual cards of
``drivers/cps_vitale/virtual``, and prints:

* read + form fill with the card already in (what the UI does on the ``inserted`` event);
* insertion to form filled (card pushed in, pcscd notices it at its 0.4 s poll, read, fill);
* the APDU count (T=0 card: 61xx/GET RESPONSE and 6Cxx resends included);
* CPS: identity, PIN verification and one signature.

Usage: ``.venv/bin/python benchmarks/bench_cards.py [--reads 200] [--insertions 20]``
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from drivers.cps_vitale import list_readers, open_cps, read_card
from drivers.cps_vitale.virtual import VpcdLink, parse_card
from drivers.cps_vitale.vitale import VitaleCard
from services.cards.logic import check_nirs, patient_form

VPCD_LIBRARY = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
SYSTEM_SOCKET = Path("/run/pcscd/pcscd.comm")
READER = "Virtual PCD 00 00"
GOAL_S = 1.0
PEOPLE = [
    {
        "surname": "MARTIN",
        "first_name": "JEANNE",
        "birth_date": "1948-03-12",
        "nir": "248037512345658",
    },
    {
        "surname": "MARTIN",
        "first_name": "LÉO",
        "birth_date": "2015-06-01",
        "nir": "115069912345658",
    },
]


def _alive(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


@contextmanager
def pcscd() -> Iterator[int]:
    if _alive(SYSTEM_SOCKET):
        text = Path("/etc/reader.conf.d/vpcd").read_text()
        found = re.search(r"DEVICENAME\s+\S*:(0x[0-9A-Fa-f]+|[0-9]+)", text)
        yield int(found.group(1), 0) if found else 35963
        return
    if shutil.which("pcscd") is None or not VPCD_LIBRARY.exists():
        sys.exit("pcscd or vsmartcard-vpcd missing: run install.sh")
    with tempfile.TemporaryDirectory() as conf:
        port = 35963
        Path(conf, "vpcd").write_text(
            f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:0x{port:X}\n'
            f"LIBPATH {VPCD_LIBRARY}\nCHANNELID 0x{port:X}\n"
        )
        process = subprocess.Popen(
            ["pcscd", "--foreground", "--config", conf],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    if _alive(SYSTEM_SOCKET) and any(r.name == READER for r in list_readers()):
                        break
                except Exception:
                    pass
                time.sleep(0.1)
            yield port
        finally:
            process.terminate()
            process.wait(timeout=10)


def read_and_fill() -> tuple[VitaleCard, list[dict[str, object] | None], float]:
    started = time.perf_counter()
    card = read_card(READER, timeout_s=5)
    assert isinstance(card, VitaleCard)
    check_nirs(card)
    forms = [patient_form(b) for b in card.beneficiaries]
    return card, forms, time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--insertions", type=int, default=20)
    parser.add_argument("--signatures", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.node()}, Python {platform.python_version()}")
    with pcscd() as port:
        card = parse_card("vitale", {"beneficiaries": PEOPLE, "protocol": "T=0"})
        link = VpcdLink(card, port=port)
        link.insert()
        read_and_fill()  # warm-up
        reads = []
        apdus = 0
        for _ in range(args.reads):
            result, forms, elapsed = read_and_fill()
            assert all(forms)
            reads.append(elapsed)
            apdus = result.apdus
        link.remove()
        time.sleep(0.6)
        inserted = []
        for _ in range(args.insertions):
            link = VpcdLink(parse_card("vitale", {"beneficiaries": PEOPLE}), port=port)
            started = time.perf_counter()
            link.insert()
            read_and_fill()
            inserted.append(time.perf_counter() - started)
            link.remove()
            time.sleep(0.6)
        cps = parse_card(
            "cps",
            {
                "holder": {
                    "surname": "DURAND",
                    "first_name": "CLAIRE",
                    "rpps": "10000042426",
                    "profession": "Pharmacien",
                }
            },
        )
        link = VpcdLink(cps, port=port)
        link.insert()
        cps_times = []
        for _ in range(args.signatures):
            started = time.perf_counter()
            with open_cps(READER, timeout_s=5) as session:
                session.holder()
                session.verify_pin("1234")
                session.sign(hashlib.sha256(b"FSE").digest())
                cps_apdus = session.channel.apdus
            cps_times.append(time.perf_counter() - started)
        link.remove()

    def row(name: str, values: list[float]) -> None:
        p50, p99 = statistics.median(values), pct(values, 0.99)
        print(
            f"{name:<52} p50 {p50 * 1000:8.1f} ms  p99 {p99 * 1000:8.1f} ms  "
            f"max {max(values) * 1000:8.1f} ms  ratio p99/goal {p99 / GOAL_S:.3f}"
        )

    print(f"Vitale 2 (2 beneficiaries, T=0): {apdus} APDUs per read")
    row(f"read + form fill, card in ({args.reads}x)", reads)
    row(f"insertion -> form filled ({args.insertions}x)", inserted)
    row(f"CPS identity + PIN + signature ({args.signatures}x, {cps_apdus} APDUs)", cps_times)


if __name__ == "__main__":
    main()
