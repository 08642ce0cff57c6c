"""Card readings as the rest of the appliance uses them: settings, NIR check, patient form,
card events, CPS login.

The driver (``drivers/cps_vitale``) knows cards; this module knows Hygie: the NIR key is
checked with the patients service's rule, a Vitale beneficiary becomes a pre-filled patient
record, and the reader monitor's events are kept for the UI to poll.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from appliance.audit import AuditEvent, AuditLog
from appliance.config import Environment, Settings
from appliance.fieldcrypto import FieldCryptoError
from appliance.store import Store
from drivers.cps_vitale import (
    Beneficiary,
    CardConfig,
    CardError,
    CardEvent,
    CardMonitor,
    CpsCard,
    CpsSigner,
    InvalidNir,
    VitaleCard,
    read_card,
)
from drivers.cps_vitale import open_signer as _open_signer
from drivers.cps_vitale.errors import UnknownCard
from services.identity.cards import CardLoginError, terminal_id
from services.patients import PatientCrypto, PatientRejected, find_patient, save_patient
from services.patients.logic import compact, nir_problem
from services.patients.models import Identity, Patient
from services.workstations import card_reader_of_terminal


def card_config(settings: Settings) -> CardConfig:
    return CardConfig(
        cps_aid=bytes.fromhex(settings.cards_cps_aid),
        cps_cert_fid=bytes.fromhex(settings.cards_cps_cert_fid),
        cps_pin_reference=settings.cards_cps_pin_reference,
        exchange_timeout_s=settings.cards_exchange_timeout_s,
        allow_virtual_readers=settings.uses_virtual_card_readers,
        pkcs11_module=str(settings.cards_pkcs11_module) if settings.cards_pkcs11_module else None,
    )


@contextmanager
def open_signer(settings: Settings, reader: str | None = None) -> Iterator[CpsSigner]:
    """The pharmacist's CPS as a signer (billing, documents): ``verify_pin`` then ``sign``.

    Through the Cryptolib when ``cards_pkcs11_module`` is set, else APDUs through pcscd.
    """
    with _open_signer(
        reader if reader is not None else settings.cards_reader,
        settings.cards_read_timeout_s,
        card_config(settings),
    ) as signer:
        yield signer


def terminal_reader(settings: Settings, store: Store | None, terminal: str | None) -> str | None:
    """The reader for a request from ``terminal`` (the device hash of the identity service):
    the ``card_reader`` of the workstation on that terminal, else ``cards_reader`` (None:
    the first reader holding a card)."""
    if store is not None and terminal is not None:
        routed = card_reader_of_terminal(store, terminal_id(terminal))
        if routed is not None:
            return routed
    return settings.cards_reader


def check_nirs(card: VitaleCard) -> VitaleCard:
    """Refuse a card whose NIR key is wrong (a damaged card, never a typing error)."""
    for beneficiary in card.beneficiaries:
        problem = nir_problem(compact(beneficiary.nir))
        if problem is not None:
            raise InvalidNir(detail=problem)
    return card


def read(
    settings: Settings, reader: str | None = None, timeout_s: float | None = None
) -> VitaleCard | CpsCard:
    """What ``hygie cards read`` and ``POST /api/v1/cards/read`` do."""
    card = read_card(
        reader if reader is not None else settings.cards_reader,
        settings.cards_read_timeout_s if timeout_s is None else timeout_s,
        card_config(settings),
    )
    return check_nirs(card) if isinstance(card, VitaleCard) else card


def calendar_date(iso: str) -> date | None:
    try:
        return date.fromisoformat(iso)
    except ValueError:
        return None


def sex_from_nir(nir: str) -> str:
    """1: man, 2: woman; 7 and 8 (temporary numbers) say nothing: ``I`` (unknown)."""
    return {"1": "M", "2": "F"}.get(nir[:1], "I")


def patient_record(beneficiary: Beneficiary) -> Patient | None:
    """A provisional patient record from the card (identity traits to be checked against an
    identity document before the INS can be qualified); None for a lunar birth date."""
    born = calendar_date(beneficiary.birth_date)
    if born is None:
        return None
    return Patient(
        identity=Identity(
            birth_family_name=beneficiary.surname,
            given_names=beneficiary.first_name or beneficiary.surname,
            birth_date=born,
            sex=sex_from_nir(beneficiary.nir),  # type: ignore[arg-type]
            nir=beneficiary.nir,
            status="provisional",
        )
    )


def patient_form(beneficiary: Beneficiary) -> dict[str, Any] | None:
    """:func:`patient_record` as the JSON body of ``POST /api/v1/patients``."""
    record = patient_record(beneficiary)
    return None if record is None else msgspec.to_builtins(record)


class CardPatientError(Exception):
    """The card's beneficiary cannot become a patient record; ``message`` is French."""

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []


def find_or_create_patient(
    store: Store,
    crypto: PatientCrypto,
    beneficiary: Beneficiary,
    *,
    actor: str,
    today: date,
) -> tuple[str, bool]:
    """The patient record with the beneficiary's NIR, or a new provisional one made from the
    card: ``(patient_id, created)``. Not audited here: the caller audits."""
    found = find_patient(store, crypto, nir=beneficiary.nir)
    if found is not None:
        return found, False
    record = patient_record(beneficiary)
    if record is None:
        raise CardPatientError(
            "La date de naissance de la carte n'est pas une date du calendrier (date lunaire) : "
            "créez la fiche patient à la main."
        )
    try:
        patient_id, _version = save_patient(store, crypto, record, actor=actor, today=today)
    except PatientRejected as exc:
        raise CardPatientError(
            "La fiche patient ne peut pas être créée depuis la carte : données incohérentes.",
            [{"key": e.key, "message": e.message} for e in exc.errors],
        ) from exc
    except Exception as exc:
        # Another counter created the same NIR meanwhile (the patients service's
        # DuplicateIdentifierError, not exported): that record is the one.
        if type(exc).__name__ != "DuplicateIdentifierError":
            raise
        raced = find_patient(store, crypto, nir=beneficiary.nir)
        if raced is None:
            raise
        return raced, False
    return patient_id, True


def match_and_audit(
    store: Store,
    audit: AuditLog,
    crypto: PatientCrypto | None,
    card: VitaleCard,
    event: Callable[[str, str], AuditEvent],
) -> list[str | None]:
    """The patient record of each beneficiary (by NIR, through the patients service's blind
    index), each read audited in one audit transaction before anything is shown (fail
    closed). ``event(object_id, outcome)`` builds the entry: the record id, never a NIR."""
    ids: list[str | None] = []
    with audit.store.write():
        for beneficiary in card.beneficiaries:
            patient_id = None
            if crypto is not None:
                try:
                    patient_id = find_patient(store, crypto, nir=beneficiary.nir)
                except FieldCryptoError:
                    patient_id = None
            audit.record(event(patient_id or "", "success" if patient_id else "no_match"))
            ids.append(patient_id)
    return ids


class CardEvents:
    """The reader monitor's events, numbered, the last ``size`` kept for polling clients."""

    def __init__(self, size: int = 200) -> None:
        self._events: deque[tuple[int, CardEvent]] = deque(maxlen=size)
        self._seq = 0
        self._lock = threading.Condition()
        self.monitor: CardMonitor | None = None

    def publish(self, event: CardEvent) -> None:
        with self._lock:
            self._seq += 1
            self._events.append((self._seq, event))
            self._lock.notify_all()

    def since(self, after: int) -> tuple[list[tuple[int, CardEvent]], int]:
        with self._lock:
            return [(seq, e) for seq, e in self._events if seq > after], self._seq

    def wait(self, after: int, timeout_s: float) -> list[tuple[int, CardEvent]]:
        """Events after ``after``, waiting up to ``timeout_s`` for one (tests, CLI watch)."""
        with self._lock:
            self._lock.wait_for(lambda: self._seq > after, timeout=timeout_s)
        return self.since(after)[0]

    def ensure_monitor(self, settings: Settings) -> CardMonitor:
        """Start the reader monitor thread once per process (on the first poll)."""
        with self._lock:
            if self.monitor is None:
                hide = not settings.uses_virtual_card_readers
                self.monitor = CardMonitor(self.publish, hide_virtual=hide)
                self.monitor.start()
            return self.monitor

    def stop_monitor(self) -> None:
        with self._lock:
            monitor, self.monitor = self.monitor, None
        if monitor is not None:
            monitor.stop()


EVENTS = CardEvents()


class CpsPinAuthenticator:
    """Fills the identity service's CPS login extension point: card + PIN → RPPS.

    The PIN is verified *by the card* (VERIFY, or the Cryptolib's C_Login); the card then
    signs a random challenge that is checked against its certificate (a card that merely
    shows someone's public certificate cannot pass), and the certificate must be issued by a
    CA of ``cards_cps_trust_roots`` (required in prod). Only then is the RPPS returned. The
    reader is that of the workstation on the login page's terminal (:func:`terminal_reader`),
    else ``cards_reader``, else the first one holding a card.
    """

    def __init__(
        self,
        settings: Settings,
        timeout_s: float = 2.0,
        store: Callable[[], Store | None] | None = None,
    ) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        # The app's store once it is open (the authenticator is registered before startup).
        self.store = store

    def authenticate(self, terminal: str) -> str | None:
        """Without a PIN no card login is possible."""
        return None

    def authenticate_pin(self, terminal: str, pin: str) -> str:
        settings = self.settings
        roots = trust_roots(settings)
        if roots is None and settings.env is Environment.PROD:
            raise CardLoginError(
                "Connexion par carte CPS impossible : les certificats des autorités IGC-Santé "
                "ne sont pas configurés (cards_cps_trust_roots)."
            )
        try:
            store = self.store() if self.store is not None else None
            reader = terminal_reader(settings, store, terminal)
            with _open_signer(reader, self.timeout_s, card_config(settings)) as cps:
                certificate = cps.certificate()
                issuer_problem = untrusted_certificate(certificate, roots)
                if issuer_problem is not None:
                    raise CardLoginError(issuer_problem)
                holder = cps.holder()
                cps.verify_pin(pin)
                challenge = hashlib.sha256(secrets.token_bytes(32)).digest()
                signature = cps.sign(challenge)
        except UnknownCard as exc:
            raise CardLoginError("Insérez votre carte CPS dans le lecteur.") from exc
        except CardError as exc:
            raise CardLoginError(exc.message) from exc
        if not proves_key(certificate, challenge, signature):
            raise CardLoginError("La carte CPS n'a pas prouvé détenir la clé de son certificat.")
        if holder.rpps is None:
            raise CardLoginError("Carte CPS sans numéro RPPS : connexion impossible.")
        return holder.rpps


def trust_roots(settings: Settings) -> list[x509.Certificate] | None:
    """The configured CA certificates; None when unset (accepted in dev only)."""
    path = settings.cards_cps_trust_roots
    if path is None:
        return None
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return []


def untrusted_certificate(
    certificate: x509.Certificate, roots: list[x509.Certificate] | None
) -> str | None:
    """Why the certificate is not acceptable for a login, or None."""
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        return "Le certificat de la carte CPS est expiré ou pas encore valide."
    if roots is None:
        return None
    for root in roots:
        if root.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return None
    return "Le certificat de la carte CPS n'est pas émis par une autorité de confiance."


def proves_key(certificate: x509.Certificate, digest: bytes, signature: bytes) -> bool:
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


__all__ = [
    "EVENTS",
    "CardEvents",
    "CpsPinAuthenticator",
    "card_config",
    "check_nirs",
    "find_or_create_patient",
    "match_and_audit",
    "open_signer",
    "patient_form",
    "read",
    "terminal_reader",
]
