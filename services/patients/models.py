"""Patient record, dispensing entries and their API shapes (frozen: a change is a new version).

Meta constraints here check what a single value can check (lengths, ranges, character sets);
rules that need the whole record or a checksum (NIR key, INS qualification, dates not in the
future, LOINC check digit) live in :mod:`services.patients.logic`, which reports every broken
field at once instead of the first one.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"\S")]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"\S")]
Note = Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
"""A code checked by logic (NIR, RPPS, ICD-10, LOINC, CIP13...): bounded here, shaped there."""
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$")]
Version = Annotated[int, msgspec.Meta(ge=0)]

Sex = Literal["F", "M", "I"]
"""As in the INS referential: female, male, indeterminate."""
IdentityStatus = Literal["provisional", "recovered", "validated", "qualified"]
"""RNIV identity statuses: identité provisoire, récupérée (INSi), validée (document), qualifiée."""
InsOid = Literal[
    "1.2.250.1.213.1.4.8",  # INS-NIR
    "1.2.250.1.213.1.4.9",  # INS-NIA
    "1.2.250.1.213.1.4.10",  # INS-NIR de test
    "1.2.250.1.213.1.4.11",  # INS-NIA de test
]
IdentityDocument = Literal[
    "national_id_card", "passport", "residence_permit", "family_record_book", "birth_certificate"
]
"""High-trust documents the RNIV accepts to validate an identity (the last two for minors)."""
ConsentKind = Literal["bpm_adhesion", "data_sharing"]
ConsentStatus = Literal["granted", "refused", "withdrawn"]
ConditionStatus = Literal["active", "resolved"]
Severity = Literal["mild", "moderate", "severe", "unknown"]


class Ins(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Identifiant national de santé: the matricule (NIR or NIA, 15 characters) and its OID."""

    matricule: Identifier
    oid: InsOid = "1.2.250.1.213.1.4.8"


class IdentityVerification(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The identity document a staff member checked, and when."""

    document: IdentityDocument
    verified_on: date
    verified_by: UserId | None = None


class Identity(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Traits of identity as the INS referential names them, plus NIR and INS."""

    birth_family_name: Name
    given_names: Name
    """Every first name of the civil status, space-separated (INS trait « liste des prénoms »)."""
    birth_date: date
    sex: Sex
    used_family_name: Name | None = None
    used_given_name: Name | None = None
    birth_place_code: Identifier | None = None
    """INSEE code of the birth commune (5 characters; ``99xxx`` for a country abroad)."""
    nir: Identifier | None = None
    """The patient's own NIR (13 characters and a 2-digit key; spaces allowed on input)."""
    status: IdentityStatus = "provisional"
    ins: Ins | None = None
    verification: IdentityVerification | None = None


class Address(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    lines: Annotated[tuple[Label, ...], msgspec.Meta(max_length=4)] = ()
    postal_code: Annotated[str, msgspec.Meta(max_length=10, pattern=r"^[0-9A-Za-z -]*$")] = ""
    city: Annotated[str, msgspec.Meta(max_length=100)] = ""
    country: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")] = "FR"


class Contact(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    address: Address | None = None
    phone: Annotated[str, msgspec.Meta(max_length=25, pattern=r"^\+?[0-9 .()-]{6,24}$")] | None = (
        None
    )
    email: (
        Annotated[str, msgspec.Meta(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None
    ) = None


class GeneralPractitioner(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Médecin traitant declared to the Assurance Maladie."""

    name: Name
    rpps: Identifier | None = None


class Amo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Assurance maladie obligatoire: régime (2 digits), caisse (3) and centre (4)."""

    regime: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{2}$")]
    caisse: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{3}$")] | None = None
    centre: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}$")] | None = None
    valid_until: date | None = None


class AldExemption(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An affection de longue durée: its list number (1-30, 31 hors liste, 32 polypathologie)."""

    number: Annotated[int, msgspec.Meta(ge=1, le=32)] | None = None
    icd10: Identifier | None = None
    valid_from: date | None = None
    valid_until: date | None = None


class Amc(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Assurance maladie complémentaire (mutuelle): organisation and its AMC number."""

    organisation: Label
    number: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{8,10}$")] | None = None
    valid_until: date | None = None


class Coverage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    amo: Amo | None = None
    ald: Annotated[tuple[AldExemption, ...], msgspec.Meta(max_length=32)] = ()
    amc: Amc | None = None
    css: bool = False
    """Complémentaire santé solidaire."""


class Consent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One consent decision; for each kind the latest by date is the one in force."""

    kind: ConsentKind
    status: ConsentStatus
    decided_on: date
    collected_by: UserId | None = None


class Condition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    icd10: Identifier
    label: Label | None = None
    onset: date | None = None
    status: ConditionStatus = "active"
    note: Note | None = None


class Allergy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    substance: Label
    atc: Identifier | None = None
    severity: Severity = "unknown"
    recorded_on: date | None = None
    note: Note | None = None


class LabResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    loinc: Identifier
    value: Annotated[float, msgspec.Meta(ge=-1e9, le=1e9)]
    unit: Annotated[str, msgspec.Meta(min_length=1, max_length=30, pattern=r"^[!-~]+$")]
    """UCUM unit, e.g. ``umol/L``, ``mL/min/{1.73_m2}``, ``%``."""
    observed_on: date
    label: Label | None = None


class Measurement(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    value: Annotated[float, msgspec.Meta(gt=0, le=1000)]
    observed_on: date


class Clinical(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    conditions: Annotated[tuple[Condition, ...], msgspec.Meta(max_length=200)] = ()
    allergies: Annotated[tuple[Allergy, ...], msgspec.Meta(max_length=200)] = ()
    lab_results: Annotated[tuple[LabResult, ...], msgspec.Meta(max_length=500)] = ()
    weight_kg: Measurement | None = None
    height_cm: Measurement | None = None


class Patient(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The patient document: replaced as a whole on update, every version kept."""

    identity: Identity
    contact: Contact = Contact()
    gp: GeneralPractitioner | None = None
    coverage: Coverage = Coverage()
    consents: Annotated[tuple[Consent, ...], msgspec.Meta(max_length=100)] = ()
    clinical: Clinical = Clinical()
    notes: Note | None = None


class PatientUpdate(Patient, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A full replacement based on ``expected_version`` (optimistic concurrency)."""

    expected_version: Version


class StoredPatient(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the versioned table holds: the record with NIR, INS and notes taken out.

    ``sealed`` maps a field path (``identity.nir``, ``clinical.conditions.2.note``) to its
    AES-GCM ciphertext; ``blind`` maps ``nir``/``ins`` to their keyed HMAC.
    """

    patient_id: str
    pseudonym: str
    record: Patient
    sealed: dict[str, str] = {}
    blind: dict[str, str] = {}


class PatientView(Patient, frozen=True, kw_only=True):
    id: str
    version: int
    recorded_at: datetime
    recorded_by: str


class PatientSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A search hit: enough to pick the right person, no NIR, no clinical data."""

    id: str
    version: int
    birth_family_name: str
    used_family_name: str | None
    given_names: str
    birth_date: date
    sex: Sex
    identity_status: IdentityStatus


class PseudonymView(msgspec.Struct, frozen=True, kw_only=True):
    patient_id: str
    pseudonym: str


class Dispensing(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One dispensed line: product by CIS and/or CIP13, or a label when it is unknown.

    CIS and CIP13 let the medications service map the line to substances and ATC codes
    (BPM eligibility counts distinct substances over time).
    """

    dispensed_on: date
    quantity: Annotated[int, msgspec.Meta(ge=1, le=999)]
    cis: Identifier | None = None
    cip13: Identifier | None = None
    label: Label | None = None
    prescriber_rpps: Identifier | None = None


class StoredDispensing(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    dispensing_id: str
    patient_id: str
    entry: Dispensing


class DispensingView(Dispensing, frozen=True, kw_only=True):
    id: str
    patient_id: str
    version: int
    recorded_at: datetime
    recorded_by: str


class FieldError(msgspec.Struct, frozen=True):
    """One broken rule, located by a dotted path into the request body."""

    key: str
    message: str
