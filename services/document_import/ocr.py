"""Reading a prescription file into page texts: format sniffing, bounded decoding, the PDF
text layer, rasterisation, preprocessing (DPI normalisation, deskew, binarisation) and
Tesseract with per-word confidences.

Bounded in time and memory before anything heavy happens: the file size, the number of
pages and the pixels of each page are checked from headers (Pillow's lazy open, pdfium's
page count and page box) before a page is decoded, and Tesseract runs with a timeout.
Every refusal is a :class:`DocumentError` whose message is French (read at the counter).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pypdfium2 as pdfium
import pytesseract
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from services.document_import.models import PageText, Word

MAX_FILE_BYTES = 25 * 1024 * 1024
"""A scanned prescription is well under 10 MB; the limit leaves room for a colour PDF."""
MAX_PAGES = 20
"""A prescription has one to a few pages; a 300-page file is refused before any rendering."""
MAX_PIXELS = 40_000_000
"""About A4 at 600 dpi (4960 × 7016 = 34.8 Mpx): bigger images are refused before decoding."""
TARGET_WIDTH = 2000
"""Page width after DPI normalisation (A4 at about 240 dpi: body text 25-35 px high)."""
PDF_DPI = 240
OCR_TIMEOUT_S = 30
LANG = "fra"

# A decompression bomb is refused by our own check of the header first; Pillow's
# ``Image.MAX_IMAGE_PIXELS`` guard (left at its default: the setting is process-wide and other
# services decode images too) stays as a second line.


class DocumentError(ValueError):
    """A file that cannot be read as a prescription; ``code`` names the reason."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class ReadDocument:
    pages: list[PageText]
    images: list[Image.Image]
    """The normalised page images (grayscale, deskewed) shown beside the draft."""
    ocr_ms: int
    kind: str


def sniff(data: bytes) -> str:
    """``pdf``, ``png``, ``jpeg`` or ``tiff`` from the magic bytes, else a DocumentError."""
    if data.startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data.startswith(b"PK\x03\x04"):
        raise DocumentError(
            "unsupported-format", "archive ZIP refusée : déposez l'image ou le PDF lui-même"
        )
    raise DocumentError(
        "unsupported-format",
        "format non reconnu : seuls les images PNG, JPEG, TIFF et les PDF sont acceptés",
    )


def _check_size(data: bytes) -> None:
    if not data:
        raise DocumentError("empty-file", "fichier vide")
    if len(data) > MAX_FILE_BYTES:
        raise DocumentError(
            "file-too-large",
            f"fichier trop volumineux ({len(data) // (1024 * 1024)} Mo, "
            f"maximum {MAX_FILE_BYTES // (1024 * 1024)} Mo)",
            status=413,
        )


def _check_pixels(width: int, height: int, page: int) -> None:
    if width <= 0 or height <= 0:
        raise DocumentError("unreadable-image", f"page {page} : image vide")
    if width * height > MAX_PIXELS:
        raise DocumentError(
            "image-too-large",
            f"page {page} : image trop grande ({width} × {height} pixels, maximum "
            f"{MAX_PIXELS // 1_000_000} millions de pixels) : fichier refusé par prudence",
            status=413,
        )


def _image_frames(data: bytes) -> Iterator[tuple[Image.Image, float | None]]:
    """Each frame (a TIFF has several), checked before it is decoded, with its DPI."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise DocumentError(
            "image-too-large", "image trop grande : fichier refusé par prudence", 413
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise DocumentError("unreadable-image", "image illisible ou endommagée") from None
    index = 0
    while True:
        if index >= MAX_PAGES:
            raise DocumentError(
                "too-many-pages", f"trop de pages (maximum {MAX_PAGES} par ordonnance)", 413
            )
        _check_pixels(image.width, image.height, index + 1)
        dpi = image.info.get("dpi")
        try:
            frame = image.convert("L")
        except (OSError, ValueError, Image.DecompressionBombError):
            raise DocumentError(
                "unreadable-image", f"page {index + 1} : image illisible ou endommagée"
            ) from None
        yield frame, float(dpi[0]) if dpi and dpi[0] else None
        index += 1
        try:
            image.seek(index)
        except EOFError:
            return
        except (OSError, ValueError):
            raise DocumentError(
                "unreadable-image", f"page {index + 1} : image illisible ou endommagée"
            ) from None


def _pdf(data: bytes) -> pdfium.PdfDocument:
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as error:
        if "password" in str(error).lower():
            raise DocumentError(
                "encrypted-pdf",
                "PDF protégé par un mot de passe : enregistrez-le sans protection ou "
                "numérisez l'ordonnance",
            ) from None
        raise DocumentError("unreadable-pdf", "PDF illisible ou endommagé") from None
    return document


# --------------------------------------------------------------------------- preprocessing


def normalise_dpi(image: Image.Image, dpi: float | None) -> Image.Image:
    """Scale the page so body text has the height Tesseract reads best.

    With a trusted DPI the page is brought to 240 dpi; otherwise (or when the DPI is absurd)
    its width is brought to :data:`TARGET_WIDTH`, an A4 page being the usual case.
    """
    factor = PDF_DPI / dpi if dpi and 50 <= dpi <= 1200 else TARGET_WIDTH / image.width
    factor = max(0.25, min(factor, 4.0))
    if abs(factor - 1) < 0.05:
        return image
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    if size[0] * size[1] > MAX_PIXELS:
        return image
    return image.resize(size, Image.Resampling.LANCZOS if factor < 1 else Image.Resampling.BICUBIC)


def otsu_threshold(gray: np.ndarray) -> int:
    """Otsu's threshold of an 8-bit grayscale array (the value that best splits ink and
    paper)."""
    histogram = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    total = histogram.sum()
    if total == 0:
        return 128
    levels = np.arange(256)
    weight_bg = np.cumsum(histogram)
    weight_fg = total - weight_bg
    sum_bg = np.cumsum(histogram * levels)
    mean_bg = np.divide(sum_bg, weight_bg, out=np.zeros(256), where=weight_bg > 0)
    mean_fg = np.divide(sum_bg[-1] - sum_bg, weight_fg, out=np.zeros(256), where=weight_fg > 0)
    between = weight_bg * weight_fg * (mean_bg - mean_fg) ** 2
    return int(np.argmax(between))


def skew_angle(image: Image.Image, limit: float = 6.0) -> float:
    """Angle (degrees) that makes text lines horizontal: the rotation whose row profile of
    ink is the sharpest (projection-profile method), on a reduced copy."""
    small = image.copy()
    small.thumbnail((700, 700))
    ink = np.asarray(small) < otsu_threshold(np.asarray(small))
    if ink.mean() < 0.002:
        return 0.0
    mask = Image.fromarray((ink * 255).astype(np.uint8))

    def sharpness(angle: float) -> float:
        rows = np.asarray(mask.rotate(angle, resample=Image.Resampling.NEAREST)).sum(axis=1)
        return float(np.square(np.diff(rows.astype(np.float64))).sum())

    best = max(np.arange(-limit, limit + 0.01, 1.0), key=sharpness)
    fine = max(np.arange(best - 0.8, best + 0.81, 0.2), key=sharpness)
    return float(round(fine, 2))


def preprocess(image: Image.Image, dpi: float | None) -> tuple[Image.Image, Image.Image]:
    """(page shown to the reviewer, binarised page given to Tesseract)."""
    page = normalise_dpi(image, dpi)
    angle = skew_angle(page)
    if abs(angle) >= 0.2:
        page = page.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    # A 3×3 box blur before the threshold takes the scanner's speckle off the paper (a
    # median filter does it slightly better at 5× the time on an A4 page).
    cleaned = page.filter(ImageFilter.BoxBlur(1))
    array = np.asarray(cleaned)
    threshold = otsu_threshold(array)
    binary = Image.fromarray(array > threshold)  # mode "1": 8× smaller to hand to Tesseract
    return page, binary


# --------------------------------------------------------------------------- OCR


def ocr_page(image: Image.Image, number: int) -> PageText:
    """Tesseract (French model, automatic page segmentation) with per-word confidences,
    grouped into text lines top to bottom."""
    try:
        data = pytesseract.image_to_data(
            image,
            lang=LANG,
            # No second pass looking for white-on-black text: prescriptions have none, and
            # it costs a good share of the time.
            config="--psm 4 -c tessedit_do_invert=0",
            output_type=pytesseract.Output.DICT,
            timeout=OCR_TIMEOUT_S,
        )
    except RuntimeError:
        raise DocumentError(
            "ocr-timeout", f"page {number} : lecture trop longue, abandonnée", 422
        ) from None
    except pytesseract.TesseractNotFoundError:
        raise DocumentError("ocr-unavailable", "Tesseract n'est pas installé", 503) from None
    lines: dict[tuple[int, int, int], list[Word]] = {}
    order: list[tuple[int, int, int]] = []
    for i, text in enumerate(data["text"]):
        if not str(text).strip():
            continue
        key = (int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
        if key not in lines:
            lines[key] = []
            order.append(key)
        lines[key].append(
            Word(
                text=str(text),
                confidence=max(0.0, float(data["conf"][i])),
                line=len(order) - 1,
                left=int(data["left"][i]),
                top=int(data["top"][i]),
                width=int(data["width"][i]),
                height=int(data["height"][i]),
            )
        )
    order.sort(key=lambda k: (min(w.top for w in lines[k]), min(w.left for w in lines[k])))
    texts: list[str] = []
    confidences: list[float] = []
    words: list[Word] = []
    for position, key in enumerate(order):
        items = sorted(lines[key], key=lambda w: w.left)
        texts.append(" ".join(w.text for w in items))
        confidences.append(round(sum(w.confidence for w in items) / len(items), 1))
        words.extend(
            Word(
                text=w.text,
                confidence=w.confidence,
                line=position,
                left=w.left,
                top=w.top,
                width=w.width,
                height=w.height,
            )
            for w in items
        )
    return PageText(
        number=number,
        lines=tuple(texts),
        line_confidences=tuple(confidences),
        words=tuple(words),
        source="ocr",
        width=image.width,
        height=image.height,
    )


def _text_layer(page: pdfium.PdfPage) -> str:
    textpage = page.get_textpage()
    try:
        return str(textpage.get_text_range())
    finally:
        textpage.close()


def read_document(data: bytes) -> ReadDocument:
    """Every page of a prescription file as text (OCR or PDF text layer) and as an image."""
    _check_size(data)
    kind = sniff(data)
    started = time.perf_counter()
    pages: list[PageText] = []
    images: list[Image.Image] = []
    if kind == "pdf":
        document = _pdf(data)
        try:
            count = len(document)
            if count == 0:
                raise DocumentError("unreadable-pdf", "PDF sans aucune page")
            if count > MAX_PAGES:
                raise DocumentError(
                    "too-many-pages",
                    f"trop de pages ({count}, maximum {MAX_PAGES} par ordonnance)",
                    413,
                )
            for index in range(count):
                page = document[index]
                width_pt, height_pt = page.get_size()
                scale = PDF_DPI / 72
                if width_pt * height_pt * scale * scale > MAX_PIXELS:
                    raise DocumentError(
                        "image-too-large",
                        f"page {index + 1} : format de page démesuré, fichier refusé",
                        413,
                    )
                text = _text_layer(page)
                bitmap = page.render(scale=scale, grayscale=True)
                image = bitmap.to_pil().convert("L")
                if len("".join(text.split())) >= 20:
                    raw = [line.strip() for line in text.splitlines()]
                    kept = tuple(line for line in raw if line)
                    pages.append(
                        PageText(
                            number=index + 1,
                            lines=kept,
                            line_confidences=tuple(100.0 for _ in kept),
                            source="text-layer",
                            width=image.width,
                            height=image.height,
                        )
                    )
                    images.append(image)
                    continue
                shown, binary = preprocess(image, PDF_DPI)
                pages.append(ocr_page(binary, index + 1))
                images.append(shown)
        except pdfium.PdfiumError:
            raise DocumentError("unreadable-pdf", "PDF illisible ou endommagé") from None
        finally:
            document.close()
    else:
        for index, (frame, dpi) in enumerate(_image_frames(data)):
            shown, binary = preprocess(frame, dpi)
            pages.append(ocr_page(binary, index + 1))
            images.append(shown)
    return ReadDocument(
        pages=pages,
        images=images,
        ocr_ms=round((time.perf_counter() - started) * 1000),
        kind="pdf" if kind == "pdf" else "scan",
    )


def page_png(image: Image.Image, max_width: int = 1400) -> bytes:
    """The page as a PNG for the review screen (reduced: the reviewer compares by eye)."""
    shown = image
    if image.width > max_width:
        shown = image.resize(
            (max_width, max(1, round(image.height * max_width / image.width))),
            Image.Resampling.LANCZOS,
        )
    buffer = io.BytesIO()
    ImageOps.grayscale(shown).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def single_thread() -> None:
    """Tesseract's OpenMP threads off: on a shared 2-core appliance one page per core is
    faster than four threads fighting (and the benchmark measures one core)."""
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
