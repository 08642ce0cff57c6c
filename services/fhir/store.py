"""Import and export of FHIR bundles. The FHIR service keeps no table of its own: it reads
and writes through the patients and prescriptions services' public functions, in one
transaction for a transaction bundle (all or nothing).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import msgspec

from appliance.store import Store, VersionConflictError
from services.fhir import logic
from services.fhir.logic import EntryError, Json
from services.fhir.models import EntryReport, ImportReport, Outcome
from services.patients import (
    PatientCrypto,
    PatientRejected,
    dispensing_entries,
    find_patient,
    load_patient,
    save_dispensing,
    save_patient,
)
from services.patients.logic import validate_patient
from services.patients.models import Clinical, Patient
from services.patients.store import DuplicateIdentifierError
from services.prescriptions import logic as rx_logic
from services.prescriptions import store as rx_store
from services.prescriptions.models import (
    MedicationStatement,
    Prescriber,
    Prescription,
    StoredPrescription,
    StoredStatement,
)

MAX_ENTRIES = 10_000
_UNREADABLE = (KeyError, TypeError, ValueError, ArithmeticError, AttributeError, IndexError)
"""A valid FHIR resource this mapping cannot read (e.g. a timing period of 0): rejected."""
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


_TAKES_MEDICATION = frozenset({"MedicationRequest", "MedicationStatement", "MedicationDispense"})


class BundleError(Exception):
    """The body is not a Bundle this import reads (answered 400, nothing stored)."""


class _Rollback(Exception):
    pass


@dataclass
class _Entry:
    index: int
    full_url: str | None
    resource_type: str | None
    resource: Json | None
    outcome: Outcome = "rejected"
    target: str | None = None
    message: str | None = None


@dataclass
class _PatientState:
    patient_id: str
    record: Patient
    version: int
    changed: bool = False
    entries: list[_Entry] = field(default_factory=list)


class _Import:
    def __init__(self, store: Store, crypto: PatientCrypto, actor: str, today: date) -> None:
        self.store, self.crypto, self.actor, self.today = store, crypto, actor, today
        self.patients: dict[str, _PatientState] = {}
        self.refs: dict[str, str] = {}  # reference → patient id
        self.practitioners: dict[str, Json] = {}
        self.writes: list[Callable[[], None]] = []

    # ----------------------------------------------------------------- references

    def patient_of(self, reference: str | None) -> _PatientState:
        if not reference:
            raise EntryError("no patient reference")
        patient_id = self.refs.get(reference)
        if patient_id is None and reference.startswith("Patient/"):
            patient_id = reference.removeprefix("Patient/")
        if patient_id is None or not _UUID.fullmatch(patient_id):
            raise EntryError(f"reference '{reference}' names no patient of this bundle or store")
        state = self.patients.get(patient_id)
        if state is None:
            loaded = load_patient(self.store, self.crypto, patient_id)
            if loaded is None:
                raise EntryError(f"reference '{reference}' names no known patient")
            state = _PatientState(patient_id, loaded[0], loaded[1])
            self.patients[patient_id] = state
        return state

    def practitioner_of(self, reference: str | None) -> Json:
        found = self.practitioners.get(reference or "")
        if found is None:
            raise EntryError(f"requester '{reference}' is not a Practitioner of this bundle")
        return found

    # ----------------------------------------------------------------- resources

    def patient(self, entry: _Entry) -> None:
        resource = entry.resource or {}
        existing_id = resource.get("id") if isinstance(resource.get("id"), str) else None
        loaded = None
        if existing_id and _UUID.fullmatch(existing_id):
            loaded = load_patient(self.store, self.crypto, existing_id)
        identity_only, _ = logic.patient_identity(resource, None)
        if loaded is None:
            other = find_patient(
                self.store,
                self.crypto,
                nir=identity_only.nir,
                ins=identity_only.ins.matricule if identity_only.ins else None,
            )
            if other:
                existing_id = other
                loaded = load_patient(self.store, self.crypto, other)
        base = loaded[0] if loaded else None
        identity, contact = logic.patient_identity(resource, base.identity if base else None)
        gp_refs = resource.get("generalPractitioner") or []
        gp = base.gp if base else None
        if gp_refs:
            gp = logic.gp_from(self.practitioners.get(gp_refs[0].get("reference", "")))
        record = msgspec.structs.replace(
            base or Patient(identity=identity), identity=identity, contact=contact, gp=gp
        )
        errors = validate_patient(record, self.today)
        if errors:
            raise EntryError("; ".join(f"{e.key}: {e.message}" for e in errors))
        if loaded is not None and existing_id:
            patient_id, version = existing_id, loaded[1]
            changed = record != loaded[0]
        else:
            patient_id = (
                existing_id
                if existing_id and _UUID.fullmatch(existing_id) and existing_id not in self.patients
                else str(uuid.uuid4())
            )
            version, changed = 0, True
        state = _PatientState(patient_id, record, version, changed=changed)
        self.patients[patient_id] = state
        for key in (entry.full_url, f"Patient/{resource['id']}" if resource.get("id") else None):
            if key:
                self.refs[key] = patient_id
        entry.outcome = "created" if version == 0 else ("updated" if changed else "unchanged")
        entry.target = f"patient/{patient_id}"
        state.entries.append(entry)

    def clinical(self, entry: _Entry) -> None:
        resource = entry.resource or {}
        kind = entry.resource_type
        subject = resource.get("patient" if kind == "AllergyIntolerance" else "subject")
        state = self.patient_of(logic.reference_id(subject))
        clinical = state.record.clinical
        if kind == "Condition":
            item: Any = logic.condition(resource)
            present = item in clinical.conditions
            new = msgspec.structs.replace(clinical, conditions=(*clinical.conditions, item))
        elif kind == "AllergyIntolerance":
            item = logic.allergy(resource)
            present = item in clinical.allergies
            new = msgspec.structs.replace(clinical, allergies=(*clinical.allergies, item))
        else:
            found = logic.observation(resource)
            if isinstance(found, tuple):
                name, measurement = found
                present = getattr(clinical, name) == measurement
                new = msgspec.structs.replace(clinical, **{name: measurement})
            else:
                present = found in clinical.lab_results
                new = msgspec.structs.replace(clinical, lab_results=(*clinical.lab_results, found))
        entry.target = f"patient/{state.patient_id}"
        if present:
            entry.outcome = "unchanged"
            return
        candidate = msgspec.structs.replace(state.record, clinical=new)
        before = {e.key for e in validate_patient(state.record, self.today)}
        errors = [e for e in validate_patient(candidate, self.today) if e.key not in before]
        if errors:
            raise EntryError("; ".join(f"{e.key}: {e.message}" for e in errors))
        state.record = candidate
        state.changed = True
        entry.outcome = "created" if state.version == 0 else "updated"
        state.entries.append(entry)

    def prescription(self, group: list[_Entry]) -> None:
        resources = [e.resource or {} for e in group]
        state = self.patient_of(logic.reference_id(resources[0].get("subject")))
        practitioner = self.practitioner_of(logic.reference_id(resources[0].get("requester")))
        lines = []
        heads = set()
        for resource in resources:
            if logic.reference_id(resource.get("subject")) != logic.reference_id(
                resources[0].get("subject")
            ):
                raise EntryError("requests of one group name different patients")
            line, authored, renewals, validity = logic.request_line(resource)
            heads.add((authored, renewals, validity))
            lines.append(line)
        if len(heads) != 1:
            raise EntryError("requests of one group differ in date, renewals or validity")
        authored, renewals, validity = heads.pop()
        prescription = rx_logic.normalise(
            Prescription(
                patient_id=state.patient_id,
                prescriber=logic.prescriber(practitioner),
                prescribed_on=authored,
                lines=tuple(lines),
                renewals=renewals,
                valid_until=validity,
            )
        )
        errors = rx_logic.mandatory_errors(prescription, self.today)
        if errors:
            raise EntryError("; ".join(f"{e.key}: {e.message}" for e in errors))
        given = logic.hygie_id(resources[0], logic.HYGIE_PRESCRIPTION)
        current = rx_store.get(self.store, given) if given and _UUID.fullmatch(given) else None
        if current is not None and current.entity.prescription.patient_id != state.patient_id:
            raise EntryError("this prescription id belongs to another patient")
        prescription_id = given if given and _UUID.fullmatch(given) else str(uuid.uuid4())
        version = current.version if current else 0
        if current is not None and current.entity.prescription == prescription:
            outcome: Outcome = "unchanged"
        else:
            outcome = "updated" if current else "created"
            stored = StoredPrescription(prescription_id=prescription_id, prescription=prescription)
            self.writes.append(
                lambda: _ignore(
                    rx_store.save(self.store, stored, actor=self.actor, expected_version=version)
                )
            )
        for entry in group:
            entry.outcome, entry.target = outcome, f"prescription/{prescription_id}"

    def statement(self, entry: _Entry) -> None:
        resource = entry.resource or {}
        state = self.patient_of(logic.reference_id(resource.get("subject")))
        found = logic.statement(resource, state.patient_id)
        given = next(
            (
                i.get("value")
                for i in resource.get("identifier", [])
                if i.get("system") == logic.HYGIE_STATEMENT
            ),
            None,
        )
        current = rx_store.get_statement(self.store, given) if given else None
        if current is not None and current.entity.statement.patient_id != state.patient_id:
            raise EntryError("this statement id belongs to another patient")
        statement_id = given if given and _UUID.fullmatch(given) else str(uuid.uuid4())
        entry.target = f"medication_statement/{statement_id}"
        if current is not None and current.entity.statement == found:
            entry.outcome = "unchanged"
            return
        version = current.version if current else 0
        entry.outcome = "updated" if current else "created"
        stored = StoredStatement(statement_id=statement_id, statement=found)
        self.writes.append(
            lambda: _ignore(
                rx_store.save_statement(
                    self.store, stored, actor=self.actor, expected_version=version
                )
            )
        )

    def dispense(self, entry: _Entry) -> None:
        resource = entry.resource or {}
        state = self.patient_of(logic.reference_id(resource.get("subject")))
        found = logic.dispensing(resource)
        if found.dispensed_on < state.record.identity.birth_date:
            raise EntryError("whenHandedOver is before the birth date")
        given = next(
            (
                i.get("value")
                for i in resource.get("identifier", [])
                if i.get("system") == logic.HYGIE_DISPENSING
            ),
            None,
        )
        if state.version and given:
            known = dict(dispensing_entries(self.store, state.patient_id))
            if known.get(given) == found:
                entry.outcome, entry.target = "unchanged", f"dispensing/{given}"
                return
        entry.outcome = "created"
        entry.target = f"patient/{state.patient_id}"
        patient_id = state.patient_id

        def write() -> None:
            try:
                save_dispensing(self.store, patient_id, found, actor=self.actor, today=self.today)
            except PatientRejected as exc:
                raise _EntryWriteError(entry, str(exc)) from None

        self.writes.append(write)

    def patient_writes(self) -> list[Callable[[], None]]:
        writes: list[Callable[[], None]] = []
        for state in self.patients.values():
            if not state.changed:
                continue

            def write(state: _PatientState = state) -> None:
                try:
                    save_patient(
                        self.store,
                        self.crypto,
                        state.record,
                        actor=self.actor,
                        today=self.today,
                        patient_id=state.patient_id,
                        expected_version=state.version,
                    )
                except (PatientRejected, DuplicateIdentifierError, VersionConflictError) as exc:
                    first = state.entries[0] if state.entries else None
                    raise _EntryWriteError(first, str(exc)) from None

            writes.append(write)
        return writes


class _EntryWriteError(Exception):
    def __init__(self, entry: _Entry | None, message: str) -> None:
        super().__init__(message)
        self.entry = entry


def _ignore(_: object) -> None:
    return None


def _entries(bundle: Any) -> tuple[str, list[_Entry]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BundleError("the body is not a FHIR Bundle (resourceType must be 'Bundle')")
    kind = bundle.get("type")
    if kind not in ("collection", "batch", "transaction"):
        raise BundleError(
            f"Bundle.type must be 'collection', 'batch' or 'transaction', not {kind!r}"
        )
    raw = bundle.get("entry", [])
    if not isinstance(raw, list):
        raise BundleError("Bundle.entry must be a list")
    if len(raw) > MAX_ENTRIES:
        raise BundleError(f"a bundle holds at most {MAX_ENTRIES} entries")
    entries = []
    for index, item in enumerate(raw):
        item = item if isinstance(item, dict) else {}
        resource = item.get("resource")
        kind_of = resource.get("resourceType") if isinstance(resource, dict) else None
        full_url = item.get("fullUrl") if isinstance(item.get("fullUrl"), str) else None
        entries.append(
            _Entry(index, full_url, kind_of if isinstance(kind_of, str) else None, resource)
        )
    return str(kind), entries


def import_bundle(
    store: Store, crypto: PatientCrypto, bundle: Any, *, actor: str, today: date
) -> ImportReport:
    """Check every entry, then store (a transaction: only when none is rejected)."""
    kind, entries = _entries(bundle)
    job = _Import(store, crypto, actor, today)
    valid: list[_Entry] = []
    for entry in entries:
        try:
            entry.resource = logic.validate_resource(entry.resource)
            valid.append(entry)
        except EntryError as exc:
            entry.outcome, entry.message = "rejected", str(exc)

    def attempt(entry: _Entry, action: Callable[[], None]) -> None:
        try:
            action()
        except EntryError as exc:
            entry.outcome, entry.message, entry.target = "rejected", str(exc), None
        except _UNREADABLE as exc:
            entry.outcome, entry.target = "rejected", None
            entry.message = f"could not be read ({exc.__class__.__name__})"

    medications: dict[str, Json] = {}
    for entry in valid:
        if entry.resource_type == "Medication":
            resource = entry.resource or {}
            own = f"Medication/{resource['id']}" if resource.get("id") else None
            for key in (entry.full_url, own):
                if key:
                    medications[key] = resource
            entry.outcome, entry.message = "referenced", "read for the references to it"
    resolved: list[_Entry] = []
    for entry in valid:
        if entry.resource_type in _TAKES_MEDICATION:
            try:
                entry.resource = logic.with_medication_concept(entry.resource or {}, medications)
            except EntryError as exc:
                entry.outcome, entry.message = "rejected", str(exc)
                continue
        resolved.append(entry)
    valid = resolved

    order = {"Practitioner": 0, "Patient": 1}
    for entry in sorted(valid, key=lambda e: order.get(e.resource_type or "", 2)):
        resource = entry.resource or {}
        if entry.resource_type == "Practitioner":
            try:
                logic.prescriber(resource)
                own = f"Practitioner/{resource['id']}" if resource.get("id") else None
                for key in (entry.full_url, own):
                    if key:
                        job.practitioners[key] = resource
                entry.outcome, entry.message = "referenced", "read for the references to it"
            except EntryError as exc:
                entry.outcome, entry.message = "rejected", str(exc)
        elif entry.resource_type == "Patient":
            attempt(entry, lambda e=entry: job.patient(e))  # type: ignore[misc]
        elif entry.resource_type in ("Condition", "AllergyIntolerance", "Observation"):
            attempt(entry, lambda e=entry: job.clinical(e))  # type: ignore[misc]
        elif entry.resource_type == "MedicationStatement":
            attempt(entry, lambda e=entry: job.statement(e))  # type: ignore[misc]
        elif entry.resource_type == "MedicationDispense":
            attempt(entry, lambda e=entry: job.dispense(e))  # type: ignore[misc]
    groups: dict[str, list[_Entry]] = {}
    for entry in valid:
        if entry.resource_type == "MedicationRequest":
            groups.setdefault(logic.group_key(entry.resource or {}), []).append(entry)
    for group in groups.values():
        try:
            job.prescription(group)
        except (EntryError, *_UNREADABLE) as exc:
            message = (
                str(exc)
                if isinstance(exc, EntryError)
                else f"could not be read ({exc.__class__.__name__})"
            )
            for entry in group:
                entry.outcome, entry.message, entry.target = "rejected", message, None

    rejected = [e for e in entries if e.outcome == "rejected"]
    writes = [*job.patient_writes(), *job.writes]
    stored = True
    if kind == "transaction":
        if rejected:
            stored = False
        else:
            try:
                with store.write():
                    for write in writes:
                        write()
            except _EntryWriteError as exc:
                stored = False
                if exc.entry is not None:
                    exc.entry.outcome, exc.entry.message = "rejected", str(exc)
        if not stored:
            first = next(e.index for e in entries if e.outcome == "rejected")
            for entry in entries:
                if entry.outcome != "rejected":
                    entry.outcome = "not_stored"
                    entry.message = f"transaction not stored: entry {first} was rejected"
    else:
        for write in writes:
            try:
                with store.write():
                    write()
            except _EntryWriteError as exc:
                if exc.entry is not None:
                    exc.entry.outcome, exc.entry.message = "rejected", str(exc)
    reports = [
        EntryReport(
            index=e.index,
            resource_type=e.resource_type,
            full_url=e.full_url,
            outcome=e.outcome,
            target=e.target if e.outcome != "not_stored" else None,
            message=e.message,
        )
        for e in entries
    ]
    return ImportReport(
        bundle_type=kind,
        stored=stored and any(e.outcome in ("created", "updated") for e in entries),
        created=sum(1 for e in reports if e.outcome == "created"),
        updated=sum(1 for e in reports if e.outcome == "updated"),
        rejected=sum(1 for e in reports if e.outcome == "rejected"),
        entries=reports,
    )


# --------------------------------------------------------------------------- export


def everything(store: Store, crypto: PatientCrypto, patient_id: str, *, today: date) -> Json | None:
    """The patient's record, prescriptions, statements and dispensings as a collection
    Bundle; ``None`` when there is no such patient.

    A prescription's lines are ``active`` while its treatment runs on ``today`` (the
    prescriptions service's own rule) and ``completed`` after, so that a reader of the
    Bundle, the analysis engine first, tells current treatments from past ones.
    """
    loaded = load_patient(store, crypto, patient_id)
    if loaded is None:
        return None
    patient = loaded[0]
    ref = f"Patient/{patient_id}"
    resources: list[Json] = []
    gp_ref = None
    if patient.gp:
        gp_id = f"{patient_id}-gp"
        gp_ref = f"Practitioner/{gp_id}"
        prescriber = Prescriber(name=patient.gp.name, rpps=patient.gp.rpps)
        resources.append(logic.practitioner(prescriber, gp_id))
    resources.insert(0, logic.patient_resource(patient_id, patient, gp_ref))
    clinical: Clinical = patient.clinical
    for index, condition in enumerate(clinical.conditions):
        resources.append(logic.condition_resource(index, patient_id, condition, ref))
    for index, allergy in enumerate(clinical.allergies):
        resources.append(logic.allergy_resource(index, patient_id, allergy, ref))
    for index, lab in enumerate(clinical.lab_results):
        resources.append(
            logic.observation_resource(
                f"{patient_id}-lab-{index}",
                lab.loinc,
                lab.value,
                lab.unit,
                lab.observed_on,
                ref,
                lab.label,
            )
        )
    for name, loinc, unit in (
        ("weight_kg", logic.WEIGHT_LOINC, "kg"),
        ("height_cm", logic.HEIGHT_LOINC, "cm"),
    ):
        measurement = getattr(clinical, name)
        if measurement:
            resources.append(
                logic.observation_resource(
                    f"{patient_id}-{name.split('_')[0]}",
                    loinc,
                    measurement.value,
                    unit,
                    measurement.observed_on,
                    ref,
                )
            )
    for item in rx_store.of_patient(store, patient_id):
        prescription = item.entity.prescription
        practitioner_id = f"{item.entity_id}-prescriber"
        resources.append(logic.practitioner(prescription.prescriber, practitioner_id))
        catalog = rx_store.products(store, [line.cis for line in prescription.lines if line.cis])
        atc = {
            i: (catalog[line.cis].atc if line.cis in catalog else None)
            for i, line in enumerate(prescription.lines)
            if line.cis
        }
        resources.extend(
            logic.medication_requests(
                item.entity_id,
                prescription,
                ref,
                f"Practitioner/{practitioner_id}",
                atc,
                status="active" if rx_logic.is_active(prescription, today) else "completed",
            )
        )
    for statement in rx_store.statements_of(store, patient_id):
        resources.append(
            logic.statement_resource(statement.entity_id, statement.entity.statement, ref)
        )
    for dispensing_id, entry in dispensing_entries(store, patient_id):
        resources.append(logic.dispense_resource(dispensing_id, entry, ref))
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in resources],
    }


__all__ = ["BundleError", "MedicationStatement", "everything", "import_bundle"]
