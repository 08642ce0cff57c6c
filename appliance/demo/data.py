"""The demo pharmacy as values: 50 invented patients, their treatments, labs and dispensing
history, built deterministically from the load day (pure: no I/O).

Everything here is invented except what must be real for the appliance to reason on it:
the products are BDPM specialities (CIS present in both the July 2025 BDPM and the test
fixture `tests/fixtures/bdpm-mini`), the codes are ICD-10 and LOINC, the NIR keys, RPPS keys
and eGFR follow their published rules (cited below). Names come from common French first
and family names; NIR, RPPS, phone numbers and addresses belong to nobody we know of.

Who is BPM-eligible is not decided here but by the patients service's rule on the loaded
data; the profiles are built so that exactly 20 patients meet the convention's criteria
(65 or more, at least five substances over six months), which the test checks through the
real eligibility endpoint.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import date, timedelta

from services.patients.models import (
    Address,
    AldExemption,
    Amc,
    Amo,
    Clinical,
    Condition,
    Contact,
    Coverage,
    GeneralPractitioner,
    Identity,
    LabResult,
    Measurement,
    Patient,
)
from services.prescriptions.models import Duration, Posology, Prescriber

NAMESPACE = uuid.UUID("5d1f6a3e-8c2b-4f7a-9e41-2b6c0d9a7f10")
"""uuid5 namespace of every demo id: the same id at every load, so a second load finds
what the first one wrote (idempotence) and any other id is the pharmacy's own data."""
PATIENTS = 50
ELIGIBLE = 20
MONTH = timedelta(days=30)
DAY = timedelta(days=1)


def demo_id(kind: str, index: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}-{index}"))


def demo_patient_ids() -> frozenset[str]:
    return frozenset(demo_id("patient", i) for i in range(PATIENTS))


@dataclass(frozen=True)
class Drug:
    """A chronic treatment line: a BDPM speciality, how it is taken, why."""

    cis: str
    name: str
    text: str
    posology: Posology
    icd10: str
    condition: str


def _p(dose: float, unit: str, *times: str, per_day: float | None = None) -> Posology:
    return Posology(
        dose=dose,
        unit=unit,
        times_per_day=per_day,
        times_of_day=times,  # type: ignore[arg-type]
        duration=Duration(value=1, unit="month"),
    )


DRUGS: dict[str, Drug] = {
    d.cis: d
    for d in (
        Drug("62042102", "AMLODIPINE ALMUS 5 mg, gélule", "1 gélule le matin",
             _p(1, "gélule", "morning"), "I10", "Hypertension artérielle essentielle"),
        Drug("63563250", "METFORMINE ACCORD 500 mg, comprimé pelliculé", "1 cp matin et soir",
             _p(1, "comprimé", "morning", "evening"), "E11.9", "Diabète de type 2"),
        Drug("61411404", "ATORVASTATINE ACCORD 10 mg, comprimé pelliculé", "1 cp le soir",
             _p(1, "comprimé", "evening"), "E78.0", "Hypercholestérolémie pure"),
        Drug("68601712", "BISOPROLOL ZENTIVA K.S 1,25 mg, comprimé", "1 cp le matin",
             _p(1, "comprimé", "morning"), "I50.9", "Insuffisance cardiaque"),
        Drug("68416845", "LEVOTHYROX 100 microgrammes, comprimé sécable",
             "1 cp le matin à jeun", _p(1, "comprimé", "morning"), "E03.9", "Hypothyroïdie"),
        Drug("69503071", "OMEPRAZOLE EG 10 mg, gélule gastro-résistante", "1 gélule le matin",
             _p(1, "gélule", "morning"), "K21.9", "Reflux gastro-œsophagien"),
        Drug("61902218", "ELIQUIS 5 mg, comprimé pelliculé", "1 cp matin et soir",
             _p(1, "comprimé", "morning", "evening"), "I48.9", "Fibrillation auriculaire"),
        Drug("64755969", "KARDEGIC 75 mg, poudre pour solution buvable en sachet-dose",
             "1 sachet à midi", _p(1, "sachet", "noon"), "I25.9",
             "Cardiopathie ischémique chronique"),
        Drug("69307585", "ESCITALOPRAM SANDOZ 10 mg, comprimé pelliculé sécable",
             "1 cp le matin", _p(1, "comprimé", "morning"), "F32.9", "Épisode dépressif"),
        Drug("64067620", "PREGABALINE EG LABO 100 mg, gélule", "1 gélule matin et soir",
             _p(1, "gélule", "morning", "evening"), "G62.9", "Polyneuropathie"),
        Drug("66150367", "CELEBREX 200 mg, gélule", "1 gélule par jour",
             _p(1, "gélule", per_day=1), "M17.9", "Gonarthrose"),
        Drug("67681303", "DIGOXINE NATIVELLE 0,25 mg, comprimé", "1 cp le matin",
             _p(1, "comprimé", "morning"), "I48.9", "Fibrillation auriculaire"),
        Drug("63245753", "COUMADINE 5 mg, comprimé sécable", "1 cp le soir",
             _p(1, "comprimé", "evening"), "I48.9", "Fibrillation auriculaire"),
        Drug("69420661", "FENOFIBRATE BIOGARAN 300 mg, gélule", "1 gélule au repas",
             _p(1, "gélule", "noon"), "E78.1", "Hypertriglycéridémie pure"),
        Drug("65677893", "REPAGLINIDE TEVA 2 mg, comprimé", "1 cp avant chaque repas",
             _p(1, "comprimé", "morning", "noon", "evening"), "E11.9", "Diabète de type 2"),
        Drug("69364999", "AMIODARONE ALMUS 200 mg, comprimé sécable", "1 cp le matin",
             _p(1, "comprimé", "morning"), "I48.9", "Fibrillation auriculaire"),
        Drug("61200859", "ALPRAZOLAM VIATRIS 0,50 mg, comprimé sécable", "1 cp le soir",
             _p(1, "comprimé", "evening"), "F41.1", "Anxiété généralisée"),
        Drug("64803410", "LANSOPRAZOLE SANDOZ 15 mg, gélule gastro-résistante",
             "1 gélule le matin", _p(1, "gélule", "morning"), "K21.9",
             "Reflux gastro-œsophagien"),
        Drug("67037301", "ZOCOR 20 mg, comprimé pelliculé", "1 cp le soir",
             _p(1, "comprimé", "evening"), "E78.0", "Hypercholestérolémie pure"),
        Drug("60234100", "DOLIPRANE 1000 mg, comprimé", "1 cp jusqu'à 3 fois par jour",
             _p(1, "comprimé", per_day=3), "M19.9", "Arthrose"),
    )
}  # fmt: skip

ELIGIBLE_PROFILES: tuple[tuple[str, ...], ...] = (
    ("62042102", "63563250", "61411404", "64755969", "69503071", "60234100"),
    ("68601712", "61902218", "61411404", "68416845", "64803410", "60234100"),
    ("63245753", "69364999", "67681303", "69420661", "61200859"),
    ("65677893", "63563250", "64067620", "66150367", "69307585", "67037301"),
    ("62042102", "68601712", "64755969", "61411404", "63563250", "69503071", "61200859"),
)
"""Five or more substances, dispensed every month for eight months: the analysis finds
interactions to show (amiodarone with warfarin and digoxin; celecoxib; benzodiazepine)."""
FEW_PROFILES: tuple[tuple[str, ...], ...] = (
    ("62042102", "61411404"),
    ("68416845", "60234100", "69503071"),
    ("63563250", "67037301", "62042102", "64755969"),
)
"""Older patients with fewer than five substances: not eligible."""
YOUNG_PROFILES: tuple[tuple[str, ...], ...] = (
    ("68416845",),
    ("69307585", "61200859"),
    ("63563250", "61411404", "62042102"),
    ("69503071",),
    ("64067620", "60234100"),
    ("62042102", "68601712", "61411404", "64755969", "69503071"),
)
"""Under 65 (the last one with five substances): not eligible, whatever the treatment."""

FEMALE = [
    "Marie",
    "Jeanne",
    "Françoise",
    "Monique",
    "Catherine",
    "Nathalie",
    "Isabelle",
    "Sylvie",
    "Martine",
    "Christiane",
    "Hélène",
    "Jacqueline",
    "Simone",
    "Odette",
    "Geneviève",
    "Colette",
    "Josette",
    "Bernadette",
    "Élise",
    "Lucie",
]
MALE = [
    "Jean",
    "Pierre",
    "Michel",
    "André",
    "Philippe",
    "Alain",
    "Bernard",
    "Jacques",
    "Daniel",
    "Gérard",
    "René",
    "Claude",
    "Marcel",
    "Henri",
    "Roger",
    "Louis",
    "Gilles",
    "François",
    "Étienne",
    "Raymond",
]
FAMILY = [
    "MARTIN",
    "BERNARD",
    "THOMAS",
    "PETIT",
    "ROBERT",
    "RICHARD",
    "DURAND",
    "DUBOIS",
    "MOREAU",
    "LAURENT",
    "SIMON",
    "MICHEL",
    "LEFÈVRE",
    "LEROY",
    "ROUX",
    "DAVID",
    "BERTRAND",
    "MOREL",
    "FOURNIER",
    "GIRARD",
    "BONNET",
    "DUPONT",
    "LAMBERT",
    "FONTAINE",
    "ROUSSEAU",
    "VINCENT",
    "MULLER",
    "FAURE",
    "ANDRÉ",
    "MERCIER",
    "BLANC",
    "GUÉRIN",
    "BOYER",
    "GARNIER",
    "CHEVALIER",
    "FRANÇOIS",
    "LEGRAND",
    "GAUTHIER",
    "GARCIA",
    "PERRIN",
    "ROBIN",
    "CLÉMENT",
    "MORIN",
    "NICOLAS",
    "HENRY",
    "ROUSSEL",
    "MATHIEU",
    "GAUTIER",
    "MASSON",
    "MARCHAND",
]
STREETS = (
    "rue Paul Bert", "cours Gambetta", "rue Garibaldi", "avenue Félix Faure", "rue de Créqui",
    "rue Servient", "rue Moncey", "place Guichard", "rue Duguesclin", "rue Vendôme",
)  # fmt: skip

GPS: tuple[tuple[str, str], ...] = (
    ("Dr Anne LEBRUN", "10101010"),
    ("Dr Marc ARNAUD", "10101020"),
    ("Dr Sophie CARON", "10101030"),
    ("Dr Paul FERRAND", "10101040"),
)
"""The médecins traitants: invented names; RPPS = a 10-digit invented stem + Luhn key."""


def luhn_key(stem: str) -> str:
    """The Luhn check digit of ``stem`` (RPPS numbers end with one)."""
    total = 0
    for i, digit in enumerate(reversed(stem)):
        value = int(digit) * (2 if i % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str((10 - total % 10) % 10)


def rpps(stem8: str, index: int = 0) -> str:
    stem = f"{stem8}{index:02d}"
    return stem + luhn_key(stem)


def nir(sex: str, birth: date, department: str, commune: str, order: int) -> str:
    """A NIR whose key is right: 97 minus the first 13 digits modulo 97 (INSEE)."""
    first13 = f"{1 if sex == 'M' else 2}{birth.year % 100:02d}{birth.month:02d}"
    first13 += f"{department}{commune}{order:03d}"
    return first13 + f"{97 - int(first13) % 97:02d}"


def ckd_epi_2021(creatinine_umol_l: float, age: int, sex: str) -> float:
    """eGFR (mL/min/1.73 m²) by the CKD-EPI 2021 creatinine equation without race
    (Inker et al., N Engl J Med 2021;385:1737-49)."""
    scr = creatinine_umol_l / 88.42
    kappa, alpha = (0.7, -0.241) if sex == "F" else (0.9, -0.302)
    value: float = 142 * min(scr / kappa, 1) ** alpha * max(scr / kappa, 1) ** -1.200 * 0.9938**age
    return round(value * (1.012 if sex == "F" else 1.0), 1)


@dataclass(frozen=True)
class DemoPatient:
    patient_id: str
    prescription_id: str
    record: Patient
    drugs: tuple[Drug, ...]
    prescribed_on: date
    renewals: int
    dispensed_months: int
    """Months of monthly dispensings of every drug, the latest this month."""
    prescriber: Prescriber
    meant_eligible: bool


def _age_birth(rng: random.Random, today: date, age: int) -> date:
    return today - timedelta(days=age * 365 + age // 4 + rng.randint(20, 340))


def patients(today: date) -> list[DemoPatient]:
    """The 50 demo patients as of ``today`` (the same list for the same day)."""
    rng = random.Random(20251125)  # noqa: S311 (reproducible demo data, not secrets)
    result: list[DemoPatient] = []
    for index in range(PATIENTS):
        if index < ELIGIBLE:
            group, profile = "eligible", ELIGIBLE_PROFILES[index % len(ELIGIBLE_PROFILES)]
            age = 66 + (index * 7) % 26
        elif index < ELIGIBLE + 6:
            group, profile = "recent", ELIGIBLE_PROFILES[index % len(ELIGIBLE_PROFILES)]
            age = 67 + index % 20
        elif index < ELIGIBLE + 16:
            group, profile = "few", FEW_PROFILES[index % len(FEW_PROFILES)]
            age = 65 + (index * 5) % 25
        else:
            group, profile = "young", YOUNG_PROFILES[index % len(YOUNG_PROFILES)]
            age = 28 + (index * 3) % 35
        sex = "F" if index % 2 == 0 else "M"
        given = (FEMALE if sex == "F" else MALE)[(index // 2) % 20]
        family = FAMILY[index]
        birth = _age_birth(rng, today, age)
        drugs = tuple(DRUGS[cis] for cis in profile)
        gp_name, gp_stem = GPS[index % len(GPS)]
        gp_rpps = rpps(gp_stem)
        creatinine = float(rng.randint(62, 135) if age >= 65 else rng.randint(55, 95))
        observed = today - timedelta(days=rng.randint(10, 80))
        labs = [
            LabResult(loinc="14682-9", value=creatinine, unit="umol/L", observed_on=observed,
                      label="Créatinine sérique"),
            LabResult(loinc="98979-8", value=ckd_epi_2021(creatinine, age, sex),
                      unit="mL/min/{1.73_m2}", observed_on=observed,
                      label="DFG estimé (CKD-EPI 2021)"),
            LabResult(loinc="2823-3", value=round(rng.uniform(3.6, 5.1), 1), unit="mmol/L",
                      observed_on=observed, label="Potassium"),
        ]  # fmt: skip
        diabetic = any(d.icd10 == "E11.9" for d in drugs)
        if diabetic:
            labs.append(
                LabResult(loinc="4548-4", value=round(rng.uniform(6.4, 8.6), 1), unit="%",
                          observed_on=observed, label="Hémoglobine glyquée (HbA1c)")
            )  # fmt: skip
        if any(d.cis == "63245753" for d in drugs):
            labs.append(
                LabResult(loinc="6301-6", value=round(rng.uniform(2.0, 3.2), 1), unit="{INR}",
                          observed_on=observed, label="INR")
            )  # fmt: skip
        conditions = tuple(
            Condition(icd10=code, label=label)
            for code, label in dict.fromkeys((d.icd10, d.condition) for d in drugs)
        )
        record = Patient(
            identity=Identity(
                birth_family_name=family,
                given_names=given,
                birth_date=birth,
                sex=sex,  # type: ignore[arg-type]
                birth_place_code="69383",
                nir=nir(sex, birth, "69", "383", 100 + index),
            ),
            contact=Contact(
                address=Address(
                    lines=(f"{3 + index * 7 % 90} {STREETS[index % len(STREETS)]}",),
                    postal_code="69003",
                    city="Lyon",
                ),
                phone=f"04 78 {10 + index:02d} {20 + index % 70:02d} {30 + index % 60:02d}",
            ),
            gp=GeneralPractitioner(name=gp_name, rpps=gp_rpps),
            coverage=Coverage(
                amo=Amo(regime="01"),
                ald=(AldExemption(number=8, icd10="E11.9", valid_from=today - 3 * 365 * DAY),)
                if diabetic
                else (),
                amc=Amc(organisation="Mutuelle de démonstration") if index % 3 else None,
            ),
            clinical=Clinical(
                conditions=conditions,
                lab_results=tuple(labs),
                weight_kg=Measurement(value=float(rng.randint(52, 92)), observed_on=observed),
                height_cm=Measurement(value=float(rng.randint(152, 182)), observed_on=observed),
            ),
        )
        recent = group == "recent"
        result.append(
            DemoPatient(
                patient_id=demo_id("patient", index),
                prescription_id=demo_id("prescription", index),
                record=record,
                drugs=drugs,
                prescribed_on=today - timedelta(days=20),
                renewals=0 if recent else 2,
                dispensed_months=2 if recent else 8,
                prescriber=Prescriber(name=gp_name, rpps=gp_rpps, specialty="médecine générale"),
                meant_eligible=group == "eligible",
            )
        )
    return result


def dispensing_days(patient: DemoPatient, today: date) -> list[date]:
    """One box a month of each drug, the latest ten days ago (oldest first)."""
    last = today - timedelta(days=10)
    return [last - k * MONTH for k in reversed(range(patient.dispensed_months))]
