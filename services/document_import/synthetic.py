"""Synthetic prescription scans, generated deterministically from a seed: for the OCR
evaluation set (benchmarks/make_ocr_eval_set.py) and for demo data.

Each image comes with its ground truth (what was written and the posology it means), taken
from the templates below and never from the parser, so the benchmark measures the parser.
Prescribers, patients and RPPS numbers are invented (the RPPS keys are valid Luhn keys but
the numbers belong to nobody the generator knows of); products are real catalog names.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from services.patients.logic import luhn_valid

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
PRINTED_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansCondensed.ttf")
HANDWRITING_FONTS = ("ComicNeue-Regular.otf", "ComicNeue-Italic.otf", "dkg.ttf")
"""Debian's fonts-comic-neue and fonts-dkg-handwriting (install.sh); used when present.
(fonts-humor-sans was left out: it has no accented letters, « gélule » would lose its é.)"""

LAYOUTS = ("classic", "inline", "bizone")


@dataclass(frozen=True)
class PosologyTemplate:
    """A posology as a prescriber writes it, with what it means (the ground truth)."""

    text: str
    dose: float | None
    unit: str | None
    per_day: float | None
    times: tuple[str, ...]
    duration_days: int | None
    as_needed: bool = False


POSOLOGIES: tuple[PosologyTemplate, ...] = (
    PosologyTemplate("1 cp matin et soir pdt 7j", 1, "comprimé", 2, ("morning", "evening"), 7),
    PosologyTemplate("1 comprimé le matin QSP 3 mois", 1, "comprimé", 1, ("morning",), 90),
    PosologyTemplate("2 gélules 3 fois par jour pendant 10 jours", 2, "gélule", 3, (), 10),
    PosologyTemplate("1 sachet le soir si besoin", 1, "sachet", 1, ("evening",), None, True),
    PosologyTemplate("1 cp 3 fois par jour pendant 5 jours", 1, "comprimé", 3, (), 5),
    PosologyTemplate("1/2 cp le soir au coucher", 0.5, "comprimé", 1, ("bedtime",), None),
    PosologyTemplate(
        "1 gélule matin, midi et soir pdt 6 jours",
        1,
        "gélule",
        3,
        ("morning", "noon", "evening"),
        6,
    ),
    PosologyTemplate("2 cp toutes les 6 heures si douleur", 2, "comprimé", 4, (), None, True),
    PosologyTemplate("1 comprimé par jour pendant 1 mois", 1, "comprimé", 1, (), 30),
    PosologyTemplate("1 cp le midi pendant 2 semaines", 1, "comprimé", 1, ("noon",), 14),
    PosologyTemplate("1 gél le matin QSP 1 mois", 1, "gélule", 1, ("morning",), 30),
    PosologyTemplate("1 gélule 2 fois par jour pdt 5j", 1, "gélule", 2, (), 5),
    PosologyTemplate("2 gélules le soir pendant 3 semaines", 2, "gélule", 1, ("evening",), 21),
    PosologyTemplate(
        "1 sachet matin et soir pendant 10 jours", 1, "sachet", 2, ("morning", "evening"), 10
    ),
    PosologyTemplate("1 sachet par jour QSP 3 mois", 1, "sachet", 1, (), 90),
    PosologyTemplate("1-0-1 pendant 15 jours", 1, None, 2, ("morning", "evening"), 15),
)

FIRST_NAMES = ("Jean", "Claire", "Sophie", "Luc", "Nadia", "Paul", "Hélène", "Marc", "Inès")
LAST_NAMES = ("MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "PETIT", "DURAND", "LEROY")
SPECIALTIES = ("Médecin généraliste", "Cardiologue", "Rhumatologue", "Médecine générale")
STREETS = ("12 rue des Lilas", "3 avenue Jean Jaurès", "45 boulevard Victor Hugo")
CITIES = ("69003 Lyon", "75011 Paris", "33000 Bordeaux", "59000 Lille")


@dataclass(frozen=True)
class SyntheticLine:
    written: str
    """The product as written on the scan."""
    cis: str
    catalog_name: str
    posology: PosologyTemplate


@dataclass(frozen=True)
class SyntheticPrescription:
    image: Image.Image
    dpi: int
    layout: str
    font: str
    degraded: bool
    prescriber: str
    rpps: str
    patient: str
    prescribed_on: date
    lines: tuple[SyntheticLine, ...]

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG", dpi=(self.dpi, self.dpi))
        return buffer.getvalue()


def available_fonts(handwriting: bool) -> list[Path]:
    """Font files of one kind present on this machine (none missing is an error)."""
    wanted = HANDWRITING_FONTS if handwriting else PRINTED_FONTS
    found: list[Path] = []
    for name in wanted:
        for folder in FONT_DIRS:
            hits = sorted(folder.rglob(name)) if folder.is_dir() else []
            if hits:
                found.append(hits[0])
                break
    return found


def fake_rpps(rng: random.Random) -> str:
    body = "1" + "".join(str(rng.randrange(10)) for _ in range(9))
    return next(body + str(k) for k in range(10) if luhn_valid(body + str(k)))


def written_product(catalog_name: str, rng: random.Random) -> str:
    """How a prescriber writes a catalog name: the name up to its strength, the strength,
    and a short form (« DOLIPRANE 1000 mg, comprimé » → « Doliprane 1000 mg cp »)."""
    head, _, form = catalog_name.partition(", ")
    head = " ".join(head.split())
    if rng.random() < 0.5:
        words = head.split()
        head = " ".join(w.capitalize() if w.isupper() and len(w) > 2 else w for w in words)
    form = form.strip().lower()
    short = ""
    if form.startswith("comprimé"):
        short = rng.choice(("cp", "comprimé", "cpr"))
    elif form.startswith("gélule"):
        short = rng.choice(("gél", "gélule"))
    elif "sachet" in form:
        short = "sachet"
    return f"{head} {short}".strip()


def _font(path: Path | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if path is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(str(path), size)


def render_synthetic_prescription(
    products: Sequence[tuple[str, str]],
    *,
    seed: int,
    layout: str | None = None,
    degraded: bool = False,
    handwriting: bool | None = None,
    dpi: int = 200,
) -> SyntheticPrescription:
    """An A4 prescription scan (grayscale) naming ``products`` ((CIS, catalog name) pairs,
    1 to 6), the same image for the same arguments.

    ``degraded``: rotated 1-4°, noisy, blurred, at 100-150 dpi, with a stamp over the
    signature and JPEG artefacts, as a counter scanner or a phone photo gives.
    """
    if not 1 <= len(products) <= 6:
        raise ValueError("a synthetic prescription has 1 to 6 lines")
    rng = random.Random(seed)  # noqa: S311 (reproducible images, not secrets)
    layout = layout or rng.choice(LAYOUTS)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    use_hand = rng.random() < 0.3 if handwriting is None else handwriting
    fonts = available_fonts(True) if use_hand else []
    fonts = fonts or available_fonts(False)
    font_path = rng.choice(fonts) if fonts else None
    width, height = round(8.27 * dpi), round(11.69 * dpi)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    pt = dpi / 72
    body = _font(font_path, round(12 * pt))
    small = _font(font_path, round(10 * pt))
    bold = _font(font_path, round(14 * pt))

    doctor = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    patient = f"{rng.choice(('M.', 'Mme'))} {rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    rpps = fake_rpps(rng)
    day = date(2025, 1, 6) + timedelta(days=rng.randrange(300))
    margin = round(0.8 * dpi)
    y = margin
    center = layout == "bizone"

    def text(value: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, x: int) -> None:
        nonlocal y
        if center:
            box = draw.textbbox((0, 0), value, font=font)
            x = round(width - (box[2] - box[0])) // 2
        draw.text((x, y), value, font=font, fill=rng.randrange(0, 40))
        y += round(font.size * 1.55) if isinstance(font, ImageFont.FreeTypeFont) else 20

    text(f"Docteur {doctor}", bold, margin)
    text(rng.choice(SPECIALTIES), small, margin)
    text(rng.choice(STREETS), small, margin)
    text(
        f"{rng.choice(CITIES)} - Tél. 04 78 {rng.randrange(10, 99)} {rng.randrange(10, 99)} 00",
        small,
        margin,
    )
    text(f"RPPS {rpps}", small, margin)
    y += round(0.3 * dpi)
    center = False
    text(f"Le {day.strftime('%d/%m/%Y')}", body, width - margin - round(2.2 * dpi))
    text(patient, body, margin)
    y += round(0.35 * dpi)
    if layout == "bizone":
        draw.line((margin, y, width - margin, y), fill=80, width=max(1, dpi // 100))
        y += round(0.1 * dpi)
        text("Prescriptions relatives au traitement de l'affection de longue durée", small, margin)
        y += round(0.15 * dpi)
    lines: list[SyntheticLine] = []
    for cis, name in products:
        form = name.partition(", ")[2].lower()
        unit = "gélule" if "gélule" in form else "sachet" if "sachet" in form else "comprimé"
        posology = rng.choice([p for p in POSOLOGIES if p.unit in (unit, None)])
        written = written_product(name, rng)
        inline = f"{written} : {posology.text}"
        if layout == "inline" and draw.textlength(inline, font=body) < width - 2 * margin:
            text(inline, body, margin)
        else:
            text(written, body, margin)
            text(posology.text, body, margin + round(0.4 * dpi))
        y += round(0.15 * dpi)
        lines.append(SyntheticLine(written=written, cis=cis, catalog_name=name, posology=posology))
    signature_y = max(y + round(0.3 * dpi), height - round(3 * dpi))
    signature_x = width - margin - round(2.5 * dpi)
    draw.text((signature_x, signature_y), "Signature", font=small, fill=60)
    if degraded:
        image = _degrade(image, rng, dpi, signature_x, signature_y)
        dpi_out = rng.choice((100, 120, 150))
        scale = dpi_out / dpi
        image = image.resize(
            (round(width * scale), round(height * scale)), Image.Resampling.BILINEAR
        )
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randrange(45, 75))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("L")
    else:
        dpi_out = dpi
    return SyntheticPrescription(
        image=image,
        dpi=dpi_out,
        layout=layout,
        font=font_path.name if font_path else "default",
        degraded=degraded,
        prescriber=f"Docteur {doctor}",
        rpps=rpps,
        patient=patient,
        prescribed_on=day,
        lines=tuple(lines),
    )


def _degrade(image: Image.Image, rng: random.Random, dpi: int, sx: int, sy: int) -> Image.Image:
    draw = ImageDraw.Draw(image)
    radius = round(0.7 * dpi)
    cx, cy = sx + radius // 2, sy
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=150, width=dpi // 40)
    stamp = _font(None, round(dpi / 8))
    draw.text((cx - radius // 2, cy - 10), "CACHET", font=stamp, fill=150)
    angle = rng.uniform(1.0, 4.0) * rng.choice((-1, 1))
    image = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=235)
    image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.4, 1.0)))
    noise = np.random.default_rng(rng.randrange(2**32)).normal(
        0, rng.uniform(8, 18), image.size[::-1]
    )
    array = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(array)
