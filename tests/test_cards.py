"""Card readers end to end: the real pcscd, Debian's vpcd reader driver, pyscard, and the
virtual Vitale and CPS cards plugged into it.

The module starts its own pcscd (``pcscd -f -c <private reader.conf.d>``) when none runs, or
uses the running one when it has the vpcd readers; it skips, saying why, only where pcscd or
vpcd cannot run. Its own pcscd runs in a private network namespace (only ``lo``): vpcd binds
its ports on every interface, and there it has no interface but loopback. The virtual cards
are fresh per test (the CPS's PIN counter lives in it).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from appliance.cli import main
from appliance.config import Settings, load_settings
from appliance.platform import open_platform
from drivers.cps_vitale import (
    CardConfig,
    CardMonitor,
    CardRemoved,
    CardTimeout,
    CpsCard,
    InvalidNir,
    MuteCard,
    PinBlocked,
    Vitale1Card,
    VitaleCard,
    WrongPin,
    list_readers,
    open_cps,
    read_card,
)
from drivers.cps_vitale.apdu import encode_tlv, parse_tlv
from drivers.cps_vitale.errors import InvalidCardData, InvalidPin, NoReader, PinRequired
from drivers.cps_vitale.pcsc import error_for
from drivers.cps_vitale.virtual import VirtualCard, VpcdLink, parse_card
from drivers.cps_vitale.virtual.vpcd import CLONE_NEWNET
from drivers.cps_vitale.vitale import match_beneficiaries, parse_identity_file
from services.cards import logic

VPCD_LIBRARY = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
SYSTEM_SOCKET = Path("/run/pcscd/pcscd.comm")
SYSTEM_VPCD_CONF = Path("/etc/reader.conf.d/vpcd")
READER = "Virtual PCD 00 00"

JEANNE = {
    "surname": "MARTIN",
    "first_name": "JEANNE",
    "birth_date": "1948-03-12",
    "nir": "248037512345658",
}
LEO = {
    "surname": "MARTIN",
    "first_name": "LÉO",
    "birth_date": "2015-06-01",
    "nir": "115069912345658",
}
HOLDER = {
    "surname": "DURAND",
    "first_name": "CLAIRE",
    "rpps": "10001234567",
    "profession": "Pharmacien",
}


def _socket_alive(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as second:
            try:
                second.bind(("0.0.0.0", port + 1))
            except OSError:
                continue
        return int(port)
    raise RuntimeError("no free pair of TCP ports")


PCSCD_NETNS: list[str] = []
"""``/proc/PID/ns/net`` of the tests' own pcscd when it runs in a private network namespace."""
PCSCD_PID: list[int] = []
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def _private_network() -> None:
    """In the forked child, before pcscd starts: a new network namespace with ``lo`` up."""
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    with socket.socket() as sock:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack_from("h", fcntl.ioctl(sock, SIOCGIFFLAGS, request), 16)[0]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))


def _listening_ports(table: Path) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets in LISTEN state of a ``/proc/.../net/tcp`` table."""
    found = set()
    for line in table.read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A":
            address, port = local.split(":")
            ip = socket.inet_ntoa(struct.pack("<I", int(address, 16)))
            found.add((ip, int(port, 16)))
    return found


def _system_vpcd_port() -> int:
    text = SYSTEM_VPCD_CONF.read_text() if SYSTEM_VPCD_CONF.exists() else ""
    found = re.search(r"DEVICENAME\s+\S*:(0x[0-9A-Fa-f]+|[0-9]+)", text)
    return int(found.group(1), 0) if found else 35963


@pytest.fixture(scope="module")
def vpcd_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The TCP port of the vpcd reader « Virtual PCD 00 00 » of a running pcscd."""
    if shutil.which("pcscd") is None or not VPCD_LIBRARY.exists():
        pytest.skip("pcscd or vsmartcard-vpcd is not installed (install.sh installs both)")
    if _socket_alive(SYSTEM_SOCKET):
        if not any(r.name == READER for r in list_readers()):
            pytest.skip(f"a pcscd without the vpcd reader already owns {SYSTEM_SOCKET}")
        yield _system_vpcd_port()
        return
    conf = tmp_path_factory.mktemp("reader.conf.d")
    port = _free_port_pair()
    (conf / "vpcd").write_text(
        f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:0x{port:X}\n'
        f"LIBPATH {VPCD_LIBRARY}\nCHANNELID 0x{port:X}\n"
    )
    log = conf.parent / "pcscd.log"
    command = ["pcscd", "--foreground", "--config", str(conf)]
    with log.open("wb") as out:
        try:
            process = subprocess.Popen(command, stdout=out, stderr=out, preexec_fn=_private_network)
            PCSCD_NETNS[:] = [f"/proc/{process.pid}/ns/net"]
        except (OSError, subprocess.SubprocessError):  # no CAP_SYS_ADMIN: the host network
            process = subprocess.Popen(command, stdout=out, stderr=out)
            PCSCD_NETNS.clear()
    PCSCD_PID[:] = [process.pid]
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.skip(f"pcscd cannot run here: {log.read_text()[-500:]}")
            if _socket_alive(SYSTEM_SOCKET):
                try:
                    if any(r.name == READER for r in list_readers()):
                        break
                except Exception:
                    pass
            time.sleep(0.1)
        else:
            pytest.skip(f"pcscd did not show the vpcd reader: {log.read_text()[-500:]}")
        yield port
    finally:
        PCSCD_NETNS.clear()
        PCSCD_PID.clear()
        logic.EVENTS.stop_monitor()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Inserted:
    """A virtual card in the reader for the duration of a ``with`` block."""

    def __init__(self, port: int, card: VirtualCard) -> None:
        self.link = VpcdLink(card, port=port, netns=PCSCD_NETNS[0] if PCSCD_NETNS else None)

    def __enter__(self) -> VpcdLink:
        self.link.insert()
        return self.link

    def __exit__(self, *exc: object) -> None:
        self.link.remove()
        time.sleep(0.5)  # pcscd's poll (0.4 s) sees the card gone before the next test


def vitale(*people: dict[str, str], **extra: Any) -> VirtualCard:
    return parse_card("vitale", {"beneficiaries": list(people or (JEANNE,)), **extra})


def cps(**extra: Any) -> VirtualCard:
    return parse_card("cps", {"holder": HOLDER, "pin": "1234", **extra})


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


# --------------------------------------------------------------------------- pure parts


def test_tlv_roundtrip_and_damaged_data() -> None:
    data = encode_tlv(0x65, encode_tlv(0x80, b"X" * 200) + encode_tlv(0x82, b"19480312"))
    (template,) = parse_tlv(b"\x00" + data + b"\xff\xff")
    assert [c.tag for c in template.children()] == [0x80, 0x82]
    assert len(template.children()[0].value) == 200
    with pytest.raises(InvalidCardData):
        list(parse_tlv(data[:-3]))
    with pytest.raises(InvalidCardData):
        parse_identity_file(encode_tlv(0x65, encode_tlv(0x82, b"1948031")))


def test_beneficiaries_are_matched_by_order_never_guessed() -> None:
    people = [("MARTIN", "JEANNE", "1948-03-12"), ("MARTIN", "LEO", "2015-06-01")]
    matched = match_beneficiaries(people, [("248037512345658", "00"), ("115069912345658", "01")])
    assert [(b.first_name, b.nir) for b in matched] == [
        ("JEANNE", "248037512345658"),
        ("LEO", "115069912345658"),
    ]
    with pytest.raises(InvalidCardData):
        match_beneficiaries(people, [("248037512345658", "00")])


def test_pcsc_codes_map_to_typed_french_errors() -> None:
    from smartcard import scard

    assert error_for(scard.SCARD_W_REMOVED_CARD, "x").code == "card_removed"
    assert error_for(scard.SCARD_E_READER_UNAVAILABLE, "x").code == "reader_unplugged"
    assert error_for(scard.SCARD_E_NO_SERVICE, "x").code == "pcsc_unavailable"
    assert error_for(scard.SCARD_W_UNRESPONSIVE_CARD, "x").code == "card_mute"
    assert error_for(scard.SCARD_E_TIMEOUT, "x").code == "timeout"
    assert "débranché" in error_for(scard.SCARD_E_READER_UNAVAILABLE, "x").message
    assert WrongPin(1).message.endswith("il reste 1 essai avant le blocage de la carte.")


def test_patient_form_from_a_beneficiary() -> None:
    from drivers.cps_vitale import Beneficiary

    form = logic.patient_form(Beneficiary("MARTIN", "JEANNE", "1948-03-12", "248037512345658"))
    assert form is not None
    assert form["identity"]["sex"] == "F"
    assert form["identity"]["birth_date"] == "1948-03-12"
    assert form["identity"]["status"] == "provisional"
    assert logic.patient_form(Beneficiary("X", "Y", "1950-00-00", "150009912345678")) is None


# --------------------------------------------------------------------------- through pcscd


@pytest.mark.parametrize(("protocol", "apdus"), [("T=0", 7), ("T=1", 4)])
def test_vitale_read_through_pcscd(vpcd_port: int, protocol: str, apdus: int) -> None:
    """T=0: the SELECT answer comes through 61xx + GET RESPONSE, the READ BINARY lengths
    through 6Cxx resends; T=1 answers directly (three fewer APDUs)."""
    with Inserted(vpcd_port, vitale(JEANNE, LEO, protocol=protocol)):
        card = read_card(timeout_s=5)
    assert isinstance(card, VitaleCard)
    assert card.reader == READER
    assert card.protocol == protocol
    assert card.apdus == apdus
    assert [b.as_json() for b in card.beneficiaries] == [
        JEANNE,
        {**LEO, "first_name": "LÉO"},
    ]


def test_cli_read_json_contract(
    vpcd_port: int, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with Inserted(vpcd_port, vitale(JEANNE)):
        code, output = run_cli("cards", "read", "--reader", READER, "--timeout", "5", "--json")
    assert code == 0, output
    answer = json.loads(output)
    assert set(answer) >= {"type", "reader", "atr", "beneficiaries", "apdus", "ms"}
    assert answer["type"] == "vitale"
    assert answer["beneficiaries"] == [JEANNE]
    assert answer["apdus"] == 7
    platform = open_platform(load_settings(), with_tokens=False)
    try:
        entries = [(e.action, e.actor, e.outcome) for e in platform.audit.entries(limit=1000)]
    finally:
        platform.close()
    assert ("vitale.read", "system:cli", "no_match") in entries  # audited, no NIR logged
    monkeypatch.setenv("HYGIE_KEY_DIR", str(tmp_path / "no-keys"))
    with Inserted(vpcd_port, vitale(JEANNE)):
        code, output = run_cli("cards", "read", "--timeout", "5", "--json")
    assert code == 1
    assert json.loads(output)["error"] == "audit_unavailable"  # fail closed
    with Inserted(vpcd_port, cps()):
        code, output = run_cli("cards", "read", "--timeout", "5", "--json")
    assert code == 0, output
    answer = json.loads(output)
    assert answer["type"] == "cps"
    assert {k: answer["holder"][k] for k in HOLDER} == HOLDER


def test_timeout_without_card(vpcd_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(CardTimeout):
        read_card(READER, timeout_s=0.5)
    assert time.monotonic() - started < 3
    code, output = run_cli("cards", "read", "--timeout", "0.3", "--json")
    assert code == 1
    assert json.loads(output) == {
        "error": "timeout",
        "message": "Aucune carte n'a été insérée dans le délai imparti.",
    }


def test_card_pulled_out_mid_read(vpcd_port: int) -> None:
    with Inserted(vpcd_port, vitale(JEANNE, faults={"remove_after_apdus": 3})):
        with pytest.raises(CardRemoved) as caught:
            read_card(timeout_s=5)
    assert "retirée pendant la lecture" in caught.value.message
    with Inserted(vpcd_port, vitale(JEANNE, faults={"remove_after_apdus": 4})):
        code, output = run_cli("cards", "read", "--timeout", "5", "--json")
    assert code == 1
    assert json.loads(output)["error"] == "card_removed"


def test_mute_card(vpcd_port: int) -> None:
    with Inserted(vpcd_port, vitale(JEANNE, faults={"mute": True})):
        with pytest.raises(MuteCard) as caught:
            read_card(timeout_s=5)
    assert "ne répond pas" in caught.value.message


def test_vitale_1_refused_and_bad_nir_key(vpcd_port: int) -> None:
    with Inserted(vpcd_port, vitale(JEANNE, generation=1)):
        with pytest.raises(Vitale1Card) as caught:
            read_card(timeout_s=5)
    assert "Vitale 2" in caught.value.message
    wrong_key = {**JEANNE, "nir": "248037512345659"}
    with Inserted(vpcd_port, vitale(wrong_key)):
        with pytest.raises(InvalidNir):
            logic.read(Settings(), timeout_s=5)


def test_cps_identity_pin_and_real_signature(vpcd_port: int) -> None:
    with Inserted(vpcd_port, cps()):
        card = read_card(timeout_s=5)
        assert isinstance(card, CpsCard)
        assert card.holder.rpps == HOLDER["rpps"]
        assert card.holder.profession == "Pharmacien"
        assert card.pin_tries_left == 3
        document = "Feuille de soins électronique n° 1".encode()
        with open_cps(timeout_s=5) as session:
            with pytest.raises(PinRequired):
                session.sign(hashlib.sha256(document).digest())
            with pytest.raises(InvalidPin):
                session.verify_pin("12")
            with pytest.raises(WrongPin) as wrong:
                session.verify_pin("0000")
            assert wrong.value.tries_left == 2
            session.verify_pin("1234")
            signature = session.sign(hashlib.sha256(document).digest())
            public_key = session.certificate().public_key()
        public_key.verify(signature, document, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg,arg-type]
        with open_cps(timeout_s=5) as session:
            assert session.pin_tries_left() == 3  # a good PIN resets the counter


def test_wrong_pin_three_times_blocks_the_card(vpcd_port: int) -> None:
    with Inserted(vpcd_port, cps()), open_cps(timeout_s=5) as session:
        tries = []
        for _ in range(2):
            with pytest.raises(WrongPin) as wrong:
                session.verify_pin("9999")
            tries.append(wrong.value.tries_left)
        assert tries == [2, 1]
        with pytest.raises(PinBlocked) as blocked:
            session.verify_pin("9999")
        assert "bloquée" in blocked.value.message
        with pytest.raises(PinBlocked):
            session.verify_pin("1234")  # the right PIN no longer opens it
        assert session.pin_tries_left() == 0


def test_monitor_publishes_insertion_and_removal(vpcd_port: int) -> None:
    events: list[Any] = []
    monitor = CardMonitor(events.append, poll_ms=200)
    monitor.start()
    try:
        assert monitor.running.wait(5)
        with Inserted(vpcd_port, vitale(JEANNE)):
            deadline = time.monotonic() + 5
            while not any(e.kind == "inserted" for e in events) and time.monotonic() < deadline:
                time.sleep(0.05)
        deadline = time.monotonic() + 5
        while not any(e.kind == "removed" for e in events) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        monitor.stop()
    kinds = [(e.kind, e.reader) for e in events]
    assert ("inserted", READER) in kinds
    assert ("removed", READER) in kinds
    inserted = next(e for e in events if e.kind == "inserted")
    assert inserted.atr.startswith("3B")


@pytest.mark.slow
def test_simulate_command_inserts_a_card(vpcd_port: int, tmp_path: Path) -> None:
    description = tmp_path / "vitale.json"
    description.write_text(json.dumps({"beneficiaries": [JEANNE]}))
    env = {**os.environ, "HYGIE_CARDS_VPCD_PORT": str(vpcd_port)}
    # The simulator joins the namespace of the tests' pcscd, as a developer would with nsenter.
    enter = ["nsenter", f"--net={PCSCD_NETNS[0]}"] if PCSCD_NETNS else []
    simulator = subprocess.Popen(
        [
            *enter,
            sys.executable,
            "-m",
            "appliance.cli",
            "cards",
            "simulate",
            "--vitale",
            str(description),
            "--seconds",
            "30",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert simulator.stderr is not None
        line = simulator.stderr.readline()
        assert "Carte virtuelle insérée" in line, line
        card = read_card(timeout_s=5)
        assert isinstance(card, VitaleCard)
        assert [b.as_json() for b in card.beneficiaries] == [JEANNE]
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
    time.sleep(0.5)
    bad = tmp_path / "bad.json"
    bad.write_text('{"beneficiaries": [{"surname": "X"}]}')
    code, output = run_cli("cards", "simulate", "--vitale", str(bad))
    assert code == 1
    assert "birth_date" in output


def test_virtual_readers_hidden_where_not_allowed(vpcd_port: int) -> None:
    """In production the vpcd readers do not count: a local process could insert a forged
    card there."""
    production = CardConfig(allow_virtual_readers=False)
    assert READER not in [r.name for r in list_readers(production)]
    assert not Settings(env="prod").uses_virtual_card_readers
    with Inserted(vpcd_port, vitale(JEANNE)):
        with pytest.raises((NoReader, CardTimeout)):
            read_card(timeout_s=0.3, config=production)


def test_cps_login_checks_issuer_and_key_possession(vpcd_port: int, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from drivers.cps_vitale.virtual.pki import holder_certificate, test_ca
    from services.identity.cards import CardLoginError

    roots = tmp_path / "roots.pem"
    roots.write_bytes(test_ca()[1].public_bytes(Encoding.PEM))
    trusted = Settings(cards_reader=READER, cards_cps_trust_roots=roots)
    with Inserted(vpcd_port, cps()):
        assert logic.CpsPinAuthenticator(trusted).authenticate_pin("t", "1234") == HOLDER["rpps"]
    other = tmp_path / "other.pem"
    _key, stranger = holder_certificate("AUTRE", "AC", "810000000001", "Autorité")
    other.write_bytes(stranger.public_bytes(Encoding.PEM))
    untrusted = Settings(cards_reader=READER, cards_cps_trust_roots=other)
    with Inserted(vpcd_port, cps()):
        with pytest.raises(CardLoginError, match="autorité de confiance"):
            logic.CpsPinAuthenticator(untrusted).authenticate_pin("t", "1234")
    impostor = cps()
    impostor.key = holder_certificate("X", "Y", "810000000002", "Z")[0]  # type: ignore[attr-defined]
    with Inserted(vpcd_port, impostor):
        with pytest.raises(CardLoginError, match="prouvé détenir la clé"):
            logic.CpsPinAuthenticator(trusted).authenticate_pin("t", "1234")
    with pytest.raises(CardLoginError, match="IGC-Santé"):
        logic.CpsPinAuthenticator(Settings(env="prod")).authenticate_pin("t", "1234")


def test_slow_card_hits_the_exchange_deadline(vpcd_port: int) -> None:
    impatient = CardConfig(exchange_timeout_s=0.25)
    with Inserted(vpcd_port, vitale(JEANNE, faults={"delay_ms": 100})):
        with pytest.raises(CardTimeout) as caught:
            read_card(timeout_s=5, config=impatient)
    assert "trop de temps à répondre" in caught.value.message


def test_pcscd_unreachable_is_a_typed_error(vpcd_port: int, tmp_path: Path) -> None:
    """The client library honours PCSCLITE_CSOCK_NAME: pointing it at no daemon is pcscd
    down, with pcscd itself still running for the other tests."""
    script = (
        "import json\n"
        "from drivers.cps_vitale import CardError, read_card\n"
        "try:\n    read_card(timeout_s=0.5)\n"
        "except CardError as exc:\n    print(json.dumps(exc.as_json()))\n"
    )
    env = {**os.environ, "PCSCLITE_CSOCK_NAME": str(tmp_path / "no-pcscd.comm")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert json.loads(done.stdout)["error"] == "pcsc_unavailable", done.stderr


def test_concurrent_reads_do_not_interleave(vpcd_port: int) -> None:
    """Each dialogue runs in a PC/SC transaction: two readers of one card never mix their
    SELECT and READ BINARY."""
    from concurrent.futures import ThreadPoolExecutor

    def read_many() -> list[str]:
        names = []
        for _ in range(15):
            card = read_card(READER, timeout_s=5)
            assert isinstance(card, VitaleCard)
            names += [b.nir for b in card.beneficiaries]
        return names

    with Inserted(vpcd_port, vitale(JEANNE, LEO)), ThreadPoolExecutor(3) as pool:
        results = [f.result() for f in [pool.submit(read_many) for _ in range(3)]]
    assert all(r == [JEANNE["nir"], LEO["nir"]] * 15 for r in results)


def test_rights_need_the_certified_library() -> None:
    """Rights, exemptions and AMC are not imitated: without the certified SESAM-Vitale
    library the boundary says so, in French, with its own code."""
    from drivers.cps_vitale import NoSesamVitaleLibrary
    from drivers.cps_vitale.errors import SesamUnavailable

    with pytest.raises(SesamUnavailable) as caught:
        NoSesamVitaleLibrary().read_rights(READER, JEANNE["nir"], None)  # type: ignore[arg-type]
    assert caught.value.code == "sesam_unavailable"
    assert "homologuée" in caught.value.message


@pytest.mark.parametrize(
    ("kind", "spec", "words"),
    [
        ("vitale", {"beneficiaries": []}, "1 à 12"),
        ("vitale", {"beneficiaries": [{**JEANNE, "nir": "12"}]}, "nir"),
        ("vitale", {"beneficiaries": [JEANNE], "generation": 3}, "generation"),
        ("vitale", {"beneficiaries": [JEANNE], "protocol": "T=2"}, "protocol"),
        ("cps", {"holder": {**HOLDER, "rpps": "123"}}, "rpps"),
        ("cps", {"holder": HOLDER, "pin": "12"}, "pin"),
        ("badge", {}, "inconnu"),
    ],
)
def test_bad_virtual_card_descriptions_are_refused(
    kind: str, spec: dict[str, Any], words: str
) -> None:
    from drivers.cps_vitale.errors import SimulatorError

    with pytest.raises(SimulatorError) as caught:
        parse_card(kind, spec)
    assert words in caught.value.message


def test_vpcd_is_reachable_through_loopback_only(vpcd_port: int) -> None:
    """vpcd binds its ports on every interface (INADDR_ANY, no option to change it); the
    tests' pcscd therefore runs in a network namespace whose only interface is ``lo``: the
    host's network has no socket on the vpcd ports, the namespace has no other interface."""
    if not PCSCD_NETNS:
        pytest.skip(
            "a pcscd started outside the tests (or without CAP_SYS_ADMIN) is in use: its "
            "confinement is install.sh's systemd drop-in, not checked here"
        )
    ports = {vpcd_port, vpcd_port + 1}
    outside = _listening_ports(Path("/proc/self/net/tcp"))
    assert not {port for _, port in outside} & ports
    pid = PCSCD_PID[0]
    inside = _listening_ports(Path(f"/proc/{pid}/net/tcp"))
    assert {("0.0.0.0", port) for port in ports} <= inside  # vpcd's INADDR_ANY, in the netns
    devices = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    assert [line.split(":")[0].strip() for line in devices] == ["lo"]
    with socket.socket() as probe:  # and from the host's network the port is closed
        assert probe.connect_ex(("127.0.0.1", vpcd_port)) != 0
