"""LOCAL SIMULATOR of the Assurance Maladie teleservices — for tests and demos only.

The real ADRi (acquisition des droits intégrée), INSi (identifiant national de santé) and
teletransmission services need certified SESAM-Vitale components, a CPS and the health
network; none can run here. This server answers on loopback with the same information the
real services carry (rights of a beneficiary, INS and traits, a logical acknowledgement per
lot, then a payment return per FSE), over JSON instead of their SOAP/EDI transports, from a
small beneficiaries file. It is never a fallback: Hygie talks to it only when its URLs are
configured to point at it (``hygie sesam simulate`` prints them).

Endpoints (JSON in, JSON or return files out):

* ``POST /adri/v1/droits`` ``{"nir", "birth_date"}`` → the beneficiary's rights;
* ``POST /insi/v1/identite`` ``{"nir"}`` or ``{"birth_family_name", "given_names",
  "birth_date", "sex"}`` → the INS and its traits;
* ``POST /teletransmission/v1/lots`` a lot (see :func:`services.sesam_vitale.store
  .lot_payload`) → an ARL return file (``text/plain``);
* ``GET /teletransmission/v1/returns/{lot_id}`` → the payment return file of the lot;
* ``GET /health`` → ``{"status": "ok", "simulator": true}``.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
from cryptography import x509

from services.sesam_vitale.logic import fse_signed_bytes, write_return
from services.sesam_vitale.models import ArlRecord, Fse, PaymentRecord
from services.sesam_vitale.signing import verify_signature

EMITTER = "SIMULATEUR-LOCAL"
INS_TEST_OID = "1.2.250.1.213.1.4.10"
"""OID of the INS-NIR *de test*: the simulator never hands out a production INS."""
MAX_BODY = 4 * 1024 * 1024


class SimBeneficiary(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    nir: str
    birth_family_name: str
    given_names: str
    birth_date: date
    sex: str
    regime: str = "01"
    caisse: str = "751"
    centre: str = "0001"
    rights_from: date = date(2020, 1, 1)
    rights_until: date | None = None
    birth_place_code: str | None = None
    ald_until: date | None = None
    amc_organisation: str | None = None
    amc_until: date | None = None
    css: bool = False


class SimData(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    beneficiaries: tuple[SimBeneficiary, ...]


DEMO_DATA = SimData(
    beneficiaries=(
        # Fictitious people; NIRs with a valid key, invented for the simulator.
        SimBeneficiary(
            nir="248027512345642",
            birth_family_name="MARTIN",
            given_names="JEANNE MARIE",
            birth_date=date(1948, 2, 14),
            sex="F",
            birth_place_code="75112",
            ald_until=date(2030, 12, 31),
            amc_organisation="Mutuelle de démonstration",
            amc_until=date(2030, 12, 31),
        ),
        SimBeneficiary(
            nir="152067512345657",
            birth_family_name="DURAND",
            given_names="PIERRE",
            birth_date=date(1952, 6, 3),
            sex="M",
            rights_until=date(2024, 12, 31),
        ),
    )
)


class Simulator:
    """State of one simulator: its beneficiaries, the lots it received and their returns."""

    def __init__(self, data: SimData, trust_anchors: list[x509.Certificate] | None = None):
        self.data = data
        self.trust_anchors = trust_anchors
        self.returns: dict[str, str] = {}
        self._lock = threading.Lock()

    def _by_nir(self, nir: str) -> SimBeneficiary | None:
        return next((b for b in self.data.beneficiaries if b.nir == nir), None)

    def rights(self, body: dict[str, Any]) -> dict[str, Any]:
        nir = str(body.get("nir", ""))
        found = self._by_nir(nir)
        if found is None or str(found.birth_date) != str(body.get("birth_date")):
            return {"status": "not_found"}
        return {
            "status": "found",
            "nir": found.nir,
            "regime": found.regime,
            "caisse": found.caisse,
            "centre": found.centre,
            "rights_from": str(found.rights_from),
            "rights_until": str(found.rights_until) if found.rights_until else None,
            "ald": found.ald_until is not None,
            "ald_until": str(found.ald_until) if found.ald_until else None,
            "amc_organisation": found.amc_organisation,
            "amc_until": str(found.amc_until) if found.amc_until else None,
            "css": found.css,
            "reference": f"ADRI-SIM-{datetime.now(UTC):%Y%m%d%H%M%S%f}",
        }

    def identity(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("nir"):
            matches = [b for b in self.data.beneficiaries if b.nir == body["nir"]]
        else:
            family = str(body.get("birth_family_name", "")).upper()
            first = str(body.get("given_names", "")).upper().split(" ")[0]
            matches = [
                b
                for b in self.data.beneficiaries
                if b.birth_family_name == family
                and b.given_names.split(" ")[0] == first
                and str(b.birth_date) == str(body.get("birth_date"))
                and b.sex == body.get("sex")
            ]
        if not matches:
            return {"status": "not_found"}
        if len(matches) > 1:
            return {"status": "multiple"}
        b = matches[0]
        return {
            "status": "found",
            "matricule": b.nir,
            "oid": INS_TEST_OID,
            "birth_family_name": b.birth_family_name,
            "given_names": b.given_names,
            "birth_date": str(b.birth_date),
            "sex": b.sex,
            "birth_place_code": b.birth_place_code,
            "reference": f"INSI-SIM-{datetime.now(UTC):%Y%m%d%H%M%S%f}",
        }

    def _judge(self, lot_id: str, fse_id: str, fse: Fse, today: date) -> PaymentRecord:
        def reject(code: str, label: str) -> PaymentRecord:
            return PaymentRecord(
                lot_id=lot_id,
                fse_id=fse_id,
                fse_number=fse.number,
                paid=False,
                amount_cents=0,
                payment_date=None,
                code=code,
                label=label,
            )

        pricing = fse.pricing
        lines = pricing.lines
        if (
            sum(line.amount_cents for line in lines) != pricing.total_cents
            or pricing.amo_cents + pricing.amc_cents + pricing.patient_cents != pricing.total_cents
        ):
            return reject("MNT", "Montants incohérents")
        found = self._by_nir(fse.beneficiary.nir)
        if found is None or found.birth_date != fse.beneficiary.birth_date:
            return reject("BEN", "Bénéficiaire inconnu")
        if fse.act_date < found.rights_from or (
            found.rights_until is not None and fse.act_date > found.rights_until
        ):
            return reject("DRT", "Droits non ouverts à la date des soins")
        return PaymentRecord(
            lot_id=lot_id,
            fse_id=fse_id,
            fse_number=fse.number,
            paid=True,
            amount_cents=pricing.amo_cents,
            payment_date=today,
            code="000",
            label="Paiement",
        )

    def receive_lot(self, body: dict[str, Any]) -> str:
        today = datetime.now(UTC).date()
        lot_id = str(body.get("lot_id", ""))[:64]
        entries = body.get("fses")
        if not lot_id or not isinstance(entries, list) or not entries:
            ack = ArlRecord(lot_id=lot_id or "?", accepted=False, code="FMT", label="Lot illisible")
            return write_return(EMITTER, today, [ack], [])
        judged: list[PaymentRecord] = []
        for entry in entries:
            try:
                fse = msgspec.convert(entry.get("fse"), Fse, strict=False)
                fse_id = str(entry["fse_id"])
            except (msgspec.ValidationError, KeyError, AttributeError, TypeError):
                ack = ArlRecord(lot_id=lot_id, accepted=False, code="FMT", label="FSE illisible")
                return write_return(EMITTER, today, [ack], [])
            problem = (
                "FSE non signée"
                if fse.signature is None
                else verify_signature(fse_signed_bytes(fse), fse.signature, self.trust_anchors)
            )
            if problem:
                ack = ArlRecord(
                    lot_id=lot_id,
                    accepted=False,
                    code="SIG",
                    label=f"Signature invalide: {problem}",
                )
                return write_return(EMITTER, today, [ack], [])
            judged.append(self._judge(lot_id, fse_id, fse, today))
        with self._lock:
            self.returns[lot_id] = write_return(EMITTER, today, [], judged)
        ack = ArlRecord(lot_id=lot_id, accepted=True, code="000", label="Lot accepté")
        return write_return(EMITTER, today, [ack], [])


def _handler(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "HygieTeleserviceSimulator/1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: requests carry NIRs, which must not reach a console log."""

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(200, {"status": "ok", "simulator": True})
                return
            prefix = "/teletransmission/v1/returns/"
            if self.path.startswith(prefix):
                lot_id = self.path[len(prefix) :]
                with sim._lock:
                    text = sim.returns.get(lot_id)
                if text is None:
                    self._json(404, {"error": "unknown lot"})
                else:
                    self._send(200, text.encode(), "text/plain; charset=utf-8")
                return
            self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self._json(400, {"error": "bad length"})
                return
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except ValueError:
                self._json(400, {"error": "not JSON"})
                return
            if not isinstance(body, dict):
                self._json(400, {"error": "a JSON object is expected"})
                return
            if self.path == "/adri/v1/droits":
                self._json(200, sim.rights(body))
            elif self.path == "/insi/v1/identite":
                self._json(200, sim.identity(body))
            elif self.path == "/teletransmission/v1/lots":
                self._send(200, sim.receive_lot(body).encode(), "text/plain; charset=utf-8")
            else:
                self._json(404, {"error": "not found"})

    return Handler


class SimulatorServer:
    """The simulator served over HTTP on loopback, in a background thread."""

    def __init__(self, sim: Simulator, port: int = 0, host: str = "127.0.0.1") -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the simulator listens on loopback only")
        self.sim = sim
        self.httpd = ThreadingHTTPServer((host, port), _handler(sim))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SimulatorServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def load_sim_data(path: Path | None) -> SimData:
    """Beneficiaries from a JSON file (``{"beneficiaries": [...]}``), or the demo set."""
    if path is None:
        return DEMO_DATA
    return msgspec.json.decode(path.read_bytes(), type=SimData)
