"""Loading the demo pharmacy into the local store, through the services' public functions.

Idempotent: every demo record has a fixed id (``data.demo_id``), so a second load finds what
the first wrote and adds nothing; each patient (record, prescription, dispensing history) is
written in one transaction, so an interrupted load leaves whole patients and the next load
completes it. A store holding any patient the demo did not create is refused unless forced.
"""

from __future__ import annotations

import secrets
import string
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from appliance.demo import data
from appliance.platform import Platform
from services.identity.accounts import CLI_ACTOR, Accounts
from services.identity.models import UserCreate
from services.identity.roles import Role
from services.patients import (
    load_patient,
    patient_crypto,
    patient_ids,
    save_dispensing,
    save_patient,
)
from services.patients.models import Dispensing
from services.prescriptions import save_prescription
from services.prescriptions.models import Prescription, PrescriptionLine

ACTOR = "system:demo"
REPO_ROOT = Path(__file__).resolve().parents[2]
CATALOG_CANDIDATES = (
    REPO_ROOT.parent / "shared" / "data" / "bdpm-2025-07",
    REPO_ROOT / "tests" / "fixtures" / "bdpm-mini",
)
"""Where ``hygie demo load`` finds a BDPM catalog when the store has none: the full July
2025 files beside the clone first, else the 289-speciality subset the tests use (every demo
product is in both)."""

USERS: tuple[tuple[str, str, Role, str | None], ...] = (
    ("demo.titulaire", "Claire FONTAINE", Role.PHARMACIEN_TITULAIRE, data.rpps("10101050")),
    ("demo.adjoint", "Thomas RENAUD", Role.PHARMACIEN_ADJOINT, data.rpps("10101060")),
    ("demo.preparatrice", "Julie MARCHAND", Role.PREPARATEUR, None),
)


class DemoRefused(Exception):
    """The store holds data the demo did not create (use ``--force`` to load anyway)."""


@dataclass
class DemoReport:
    patients_created: int = 0
    patients_present: int = 0
    prescriptions: int = 0
    dispensings: int = 0
    users_created: list[tuple[str, str, str]] = field(default_factory=list)
    """(username, role, password) of the accounts created by this load (printed once)."""
    users_present: list[str] = field(default_factory=list)
    scans: int = 0
    scans_note: str = ""
    catalog: str = ""


def foreign_patients(platform: Platform) -> list[str]:
    """Patient ids in the store that the demo did not create."""
    mine = data.demo_patient_ids()
    return [pid for pid in patient_ids(platform.store) if pid not in mine]


def _password() -> str:
    """A random password meeting the policy (length, upper, lower, digit)."""
    alphabet = string.ascii_letters + string.digits
    core = "".join(secrets.choice(alphabet) for _ in range(14))
    return f"Demo-{core}7a"


def load_users(platform: Platform, report: DemoReport) -> None:
    accounts = Accounts(platform.settings, platform.store, platform.audit)
    for username, display, role, rpps in USERS:
        if accounts.by_username(username) is not None:
            report.users_present.append(username)
            continue
        password = _password()
        accounts.create(
            UserCreate(
                username=username, display_name=display, role=role, password=password, rpps=rpps
            ),
            CLI_ACTOR,
        )
        report.users_created.append((username, role.value, password))


def load_patients(platform: Platform, today: date, report: DemoReport) -> None:
    crypto = patient_crypto(platform.settings)
    store = platform.store
    for patient in data.patients(today):
        if load_patient(store, crypto, patient.patient_id) is not None:
            report.patients_present += 1
            continue
        prescription = Prescription(
            patient_id=patient.patient_id,
            prescriber=patient.prescriber,
            prescribed_on=patient.prescribed_on,
            renewals=patient.renewals,
            lines=tuple(
                PrescriptionLine(cis=drug.cis, posology=drug.posology, original_text=drug.text)
                for drug in patient.drugs
            ),
        )
        with store.write():
            save_patient(
                store,
                crypto,
                patient.record,
                actor=ACTOR,
                today=today,
                patient_id=patient.patient_id,
                expected_version=0,
            )
            save_prescription(
                store,
                prescription,
                actor=ACTOR,
                today=today,
                prescription_id=patient.prescription_id,
            )
            for day in data.dispensing_days(patient, today):
                for drug in patient.drugs:
                    save_dispensing(
                        store,
                        patient.patient_id,
                        Dispensing(
                            dispensed_on=day,
                            quantity=1,
                            cis=drug.cis,
                            prescriber_rpps=patient.prescriber.rpps,
                        ),
                        actor=ACTOR,
                        today=today,
                    )
                    report.dispensings += 1
        platform.audit.record(
            CLI_ACTOR.event("create", "patient", patient.patient_id, purpose="demo")
        )
        report.patients_created += 1
        report.prescriptions += 1
    platform.audit.record(
        CLI_ACTOR.event("demo_load", "patient", "demo", purpose="demo", outcome="success")
    )


def load_scans(platform: Platform, count: int, report: DemoReport) -> None:
    """A few synthetic prescription scans, imported as drafts to review (OCR runs here)."""
    if count <= 0:
        report.scans_note = "aucune demandée"
        return
    try:
        from services.document_import import process_folder, render_synthetic_prescription
    except ImportError:  # pragma: no cover - the document import service is installed
        report.scans_note = "service d'import d'ordonnances absent : aucune"
        return
    drugs = list(data.DRUGS.values())
    with tempfile.TemporaryDirectory(prefix="hygie-demo-scans-") as folder:
        for index in range(count):
            chosen = [drugs[(index * 5 + k) % len(drugs)] for k in range(2 + index % 3)]
            scan = render_synthetic_prescription(
                [(d.cis, d.name) for d in chosen], seed=1000 + index, degraded=index % 2 == 1
            )
            (Path(folder) / f"ordonnance-demo-{index + 1:02d}.png").write_bytes(scan.png())
        outcomes = process_folder(platform.store, Path(folder), actor=ACTOR, limit=count)
    drafts = [o for o in outcomes if o.outcome.startswith("draft:")]
    errors = [o.outcome.removeprefix("error:") for o in outcomes if o.outcome.startswith("error:")]
    report.scans = len(drafts)
    if not outcomes:
        report.scans_note = "déjà importées lors d'un chargement précédent"
    else:
        report.scans_note = (
            f"{len(drafts)} importée(s) en brouillon à vérifier (écran Import d'ordonnances)"
        )
        if errors:
            report.scans_note += f" ; {len(errors)} illisible(s) : {errors[0]}"


def load_demo(
    platform: Platform,
    *,
    today: date,
    force: bool = False,
    scans: int = 3,
    catalog: str = "",
) -> DemoReport:
    """Load (or complete) the demo pharmacy; refuse a store with other patients unless
    ``force``."""
    foreign = foreign_patients(platform)
    if foreign and not force:
        raise DemoRefused(
            f"la base contient {len(foreign)} patient(s) hors démonstration : chargement "
            "refusé (ajoutez --force pour charger quand même)"
        )
    report = DemoReport(catalog=catalog)
    load_users(platform, report)
    load_patients(platform, today, report)
    load_scans(platform, scans, report)
    return report
