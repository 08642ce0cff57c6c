"""Three renderers of one :class:`DocumentModel`: PDF (reportlab Platypus), DOCX
(python-docx) and HTML (Jinja2).

The renderers only lay out the blocks they are given; the words all come from the model
(``logic.py``), which is what makes the three formats say the same thing. The PDF embeds
DejaVu Sans (Debian ``fonts-dejavu-core``) and carries the PDF/A-2b identification, XMP
metadata and an sRGB output intent (see docs/documents.md for what reportlab cannot
guarantee about PDF/A conformance).
"""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from docx import Document as new_docx
from docx.enum.section import WD_ORIENT
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.shared import Cm, Pt
from jinja2 import Environment, FileSystemLoader, select_autoescape
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.pdfbase import pdfdoc, pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Image as PdfImage
from reportlab.platypus import Paragraph as PdfParagraph
from reportlab.platypus import SimpleDocTemplate, Spacer, TableStyle
from reportlab.platypus import Table as PdfTable
from reportlab.platypus.flowables import Flowable

from services.documents.models import (
    AnswerBox,
    DocumentModel,
    Heading,
    Paragraph,
    Table,
)

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT = "DejaVuSans"
FONT_BOLD = "DejaVuSans-Bold"
BODY_PT = 10.5
LARGE_PT = 16.0
SMALL_PT = 8.5
TEMPLATES = Path(__file__).parent / "templates"
CHECKBOX = "☐"


class RenderError(Exception):
    """A document cannot be laid out (a font or the logo missing or unreadable)."""


def answer_text(box: AnswerBox) -> str:
    """The one line every format prints for a GP's answer (same words everywhere)."""
    return f"{box.label} : " + "   ".join(f"{CHECKBOX} {c}" for c in box.choices)


COMMENT = "Commentaire du médecin :"


# --------------------------------------------------------------------------- PDF


@cache
def _register_fonts() -> None:
    for name, file in ((FONT, "DejaVuSans.ttf"), (FONT_BOLD, "DejaVuSans-Bold.ttf")):
        path = FONT_DIR / file
        if not path.exists():
            raise RenderError(
                f"police {path} absente : installer le paquet Debian fonts-dejavu-core"
            )
        pdfmetrics.registerFont(TTFont(name, str(path)))
    pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=FONT_BOLD)


@cache
def _srgb_profile() -> bytes:
    """An sRGB ICC profile made by littlecms (Pillow), for the PDF/A output intent."""
    from PIL import ImageCms

    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def _styles(large: bool) -> dict[str, ParagraphStyle]:
    body = LARGE_PT if large else BODY_PT
    base = ParagraphStyle("body", fontName=FONT, fontSize=body, leading=body * 1.3)
    return {
        "normal": base,
        "large": ParagraphStyle("large", parent=base, fontSize=LARGE_PT, leading=LARGE_PT * 1.3),
        "small": ParagraphStyle("small", parent=base, fontSize=SMALL_PT, leading=SMALL_PT * 1.3),
        "emphasis": ParagraphStyle("emphasis", parent=base, fontName=FONT_BOLD),
        "h1": ParagraphStyle(
            "h1", parent=base, fontName=FONT_BOLD, fontSize=18, leading=23, spaceAfter=8
        ),
        "h2": ParagraphStyle(
            "h2",
            parent=base,
            fontName=FONT_BOLD,
            fontSize=max(body + 2.5, 13),
            leading=max(body + 2.5, 13) * 1.3,
            spaceBefore=8,
            spaceAfter=4,
        ),
        "h3": ParagraphStyle(
            "h3",
            parent=base,
            fontName=FONT_BOLD,
            fontSize=body + 1,
            leading=(body + 1) * 1.3,
            spaceBefore=4,
        ),
        "cell": ParagraphStyle("cell", parent=base, alignment=TA_LEFT),
        "cell_head": ParagraphStyle("cell_head", parent=base, fontName=FONT_BOLD),
    }


def _xmp(model: DocumentModel, created: datetime, producer: str) -> bytes:
    """XMP mirroring the ``/Info`` entries reportlab writes (PDF/A wants them equal)."""
    stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    title = escape(model.title)
    author = escape(model.pharmacy.name)
    subject = escape(model.template_version)
    return f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/"
    xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:pdf="http://ns.adobe.com/pdf/1.3/">
   <pdfaid:part>2</pdfaid:part>
   <pdfaid:conformance>B</pdfaid:conformance>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">{title}</rdf:li></rdf:Alt></dc:title>
   <dc:creator><rdf:Seq><rdf:li>{author}</rdf:li></rdf:Seq></dc:creator>
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{subject}</rdf:li></rdf:Alt>
   </dc:description>
   <dc:language><rdf:Bag><rdf:li>fr-FR</rdf:li></rdf:Bag></dc:language>
   <xmp:CreateDate>{stamp}</xmp:CreateDate>
   <xmp:ModifyDate>{stamp}</xmp:ModifyDate>
   <xmp:CreatorTool>Hygie ({model.template_version})</xmp:CreatorTool>
   <pdf:Producer>{escape(producer)}</pdf:Producer>
   <pdf:Keywords></pdf:Keywords>
   <pdf:Trapped>False</pdf:Trapped>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>""".encode()


def _pdfa_catalog(canvas: Canvas, model: DocumentModel) -> None:
    """Add the XMP metadata (PDF/A-2b identification) and an sRGB output intent.

    The XMP dates come from the same clock reading as the ``/Info`` dates reportlab
    writes (PDF/A wants them equal), expressed in UTC.
    """
    created = datetime.fromtimestamp(int(canvas._doc._timeStamp.t), UTC)
    catalog = canvas._doc.Catalog
    metadata = pdfdoc.PDFStream(content=_xmp(model, created, canvas._doc.info.producer))
    metadata.dictionary["Type"] = pdfdoc.PDFName("Metadata")
    metadata.dictionary["Subtype"] = pdfdoc.PDFName("XML")
    metadata.filters = []  # PDF/A: the XMP packet stays readable
    catalog.Metadata = canvas._doc.Reference(metadata)
    profile = pdfdoc.PDFStream(content=_srgb_profile())
    profile.dictionary["N"] = 3
    intent = pdfdoc.PDFDictionary(
        {
            "Type": pdfdoc.PDFName("OutputIntent"),
            "S": pdfdoc.PDFName("GTS_PDFA1"),
            "OutputConditionIdentifier": pdfdoc.PDFString("sRGB IEC61966-2.1"),
            "Info": pdfdoc.PDFString("sRGB IEC61966-2.1"),
            "DestOutputProfile": canvas._doc.Reference(profile),
        }
    )
    catalog.OutputIntents = pdfdoc.PDFArray([intent])
    catalog.__NoDefault__ = [*pdfdoc.PDFCatalog.__NoDefault__, "OutputIntents"]


class _Answer(Flowable):  # type: ignore[misc]
    """A GP answer area: the choices line, then a comment line with room to write."""

    def __init__(self, text: str, style: ParagraphStyle) -> None:
        super().__init__()
        self.line = PdfParagraph(escape(text), style)
        self.comment = PdfParagraph(escape(COMMENT), style)
        self.style = style

    def wrap(self, avail_width: float, avail_height: float) -> tuple[float, float]:
        self.width = avail_width
        _, h1 = self.line.wrap(avail_width, avail_height)
        _, h2 = self.comment.wrap(avail_width, avail_height)
        self.h1, self.h2 = h1, h2
        self.height = h1 + h2 + 1.2 * cm
        return avail_width, self.height

    def draw(self) -> None:
        canvas = self.canv
        self.line.drawOn(canvas, 0, self.height - self.h1)
        self.comment.drawOn(canvas, 0, self.height - self.h1 - self.h2 - 2)
        canvas.setStrokeColor(colors.grey)
        canvas.setLineWidth(0.5)
        canvas.rect(0, 0, self.width, self.height - self.h1 - 2)


def render_pdf(model: DocumentModel) -> bytes:
    _register_fonts()
    large = model.kind == "plan_de_prise"
    styles = _styles(large)
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=landscape(A4) if large else A4,
        leftMargin=1.8 * cm,
        rightMargin=1.8 * cm,
        topMargin=1.6 * cm,
        bottomMargin=1.8 * cm,
        title=model.title,
        author=model.pharmacy.name,
        subject=model.template_version,
        creator=f"Hygie ({model.template_version})",
        lang="fr-FR",
        initialFontName=FONT,
        initialFontSize=BODY_PT,
    )
    story: list[Flowable] = []
    if model.pharmacy.logo:
        try:
            logo = PdfImage(io.BytesIO(model.pharmacy.logo))
        except Exception as exc:
            raise RenderError(f"logo de la pharmacie illisible : {exc}") from exc
        ratio = logo.imageHeight / max(logo.imageWidth, 1)
        logo.drawWidth = 3.5 * cm
        logo.drawHeight = 3.5 * cm * ratio
        logo.hAlign = "LEFT"
        story.append(logo)
    story.append(PdfParagraph(escape(model.title), styles["h1"]))
    for block in model.blocks:
        if isinstance(block, Heading):
            story.append(PdfParagraph(escape(block.text), styles[f"h{max(block.level, 2)}"]))
        elif isinstance(block, Paragraph):
            story.append(PdfParagraph(escape(block.text), styles[block.style]))
            story.append(Spacer(1, 2))
        elif isinstance(block, Table):
            story.append(_pdf_table(block, doc.width, large or block.large))
            story.append(Spacer(1, 6))
        elif isinstance(block, AnswerBox):
            story.append(_Answer(answer_text(block), styles["normal"]))
            story.append(Spacer(1, 6))

    def on_page(canvas: Canvas, _doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(FONT, SMALL_PT)
        canvas.drawString(doc.leftMargin, 1.0 * cm, model.footer)
        canvas.restoreState()

    def first_page(canvas: Canvas, _doc: Any) -> None:
        _pdfa_catalog(canvas, model)
        on_page(canvas, _doc)

    doc.build(story, onFirstPage=first_page, onLaterPages=on_page)
    return buffer.getvalue()


def _pdf_table(block: Table, width: float, large: bool) -> PdfTable:
    size = LARGE_PT if large else BODY_PT - 1
    cell = ParagraphStyle("cell", fontName=FONT, fontSize=size, leading=size * 1.25)
    head = ParagraphStyle("head", parent=cell, fontName=FONT_BOLD)
    weights = block.widths or tuple(1.0 for _ in block.columns)
    total = sum(weights)
    col_widths = [width * w / total for w in weights]
    padding = 8.0  # left + right cell padding, with a margin

    def fits(text: str, font: str, col: float) -> bool:
        return "\n" not in text and pdfmetrics.stringWidth(text, font, size) <= col - padding

    # A cell that fits on one line is drawn as a plain string: parsing it as a Paragraph
    # costs more than the rest of the page (measured in benchmarks/bench_documents.py).
    data: list[list[object]] = [
        [
            c if fits(c, FONT_BOLD, w) else PdfParagraph(escape(c), head)
            for c, w in zip(block.columns, col_widths, strict=True)
        ]
    ]
    data += [
        [
            v if fits(v, FONT, w) else PdfParagraph(escape(v), cell)
            for v, w in zip(row, col_widths, strict=True)
        ]
        for row in block.rows
    ]
    table = PdfTable(data, colWidths=col_widths, repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, -1), FONT),
                ("FONTNAME", (0, 0), (-1, 0), FONT_BOLD),
                ("FONTSIZE", (0, 0), (-1, -1), size),
                ("LEADING", (0, 0), (-1, -1), size * 1.25),
                ("GRID", (0, 0), (-1, -1), 0.6 if large else 0.4, colors.black),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e6e6e6")),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE" if large else "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 6 if large else 3),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 6 if large else 3),
            ]
        )
    )
    return table


# --------------------------------------------------------------------------- DOCX


def render_docx(model: DocumentModel) -> bytes:
    large = model.kind == "plan_de_prise"
    document = new_docx()
    normal = document.styles["Normal"]
    normal.font.name = "DejaVu Sans"
    normal.font.size = Pt(LARGE_PT if large else BODY_PT)
    section = document.sections[0]
    if large:  # the plan de prise is a wall chart: landscape, like the PDF
        section.orientation = WD_ORIENT.LANDSCAPE
        section.page_width, section.page_height = Cm(29.7), Cm(21.0)
    else:
        section.page_width, section.page_height = Cm(21.0), Cm(29.7)
    section.left_margin = section.right_margin = Cm(1.8)
    props = document.core_properties
    props.title = model.title
    props.author = model.pharmacy.name
    props.subject = model.template_version
    props.language = "fr-FR"
    if model.pharmacy.logo:
        try:
            document.add_picture(io.BytesIO(model.pharmacy.logo), width=Cm(3.5))
        except Exception as exc:
            raise RenderError(f"logo de la pharmacie illisible : {exc}") from exc
    document.add_heading(model.title, level=1)
    for block in model.blocks:
        if isinstance(block, Heading):
            document.add_heading(block.text, level=max(block.level, 2))
        elif isinstance(block, Paragraph):
            paragraph = document.add_paragraph()
            run = paragraph.add_run(block.text)
            if block.style == "large":
                run.font.size = Pt(LARGE_PT)
            elif block.style == "small":
                run.font.size = Pt(SMALL_PT)
            elif block.style == "emphasis":
                run.bold = True
        elif isinstance(block, Table):
            _docx_table(document, block, large or block.large)
        elif isinstance(block, AnswerBox):
            document.add_paragraph(answer_text(block))
            box = document.add_table(rows=1, cols=1)
            box.style = "Table Grid"
            box.cell(0, 0).paragraphs[0].text = COMMENT
            box.cell(0, 0).add_paragraph("")
    footer = section.footer.paragraphs[0]
    footer.text = model.footer
    footer.alignment = WD_ALIGN_PARAGRAPH.LEFT
    for run in footer.runs:
        run.font.size = Pt(SMALL_PT)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _docx_table(document: Any, block: Table, large: bool) -> None:
    table = document.add_table(rows=1, cols=len(block.columns))
    table.style = "Table Grid"
    size = Pt(LARGE_PT if large else BODY_PT - 1)
    for cell, text in zip(table.rows[0].cells, block.columns, strict=True):
        run = cell.paragraphs[0].add_run(text)
        run.bold = True
        run.font.size = size
    for row in block.rows:
        cells = table.add_row().cells
        for cell, text in zip(cells, row, strict=True):
            cell.paragraphs[0].add_run(text).font.size = size


# --------------------------------------------------------------------------- HTML


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(model: DocumentModel) -> bytes:
    logo = None
    if model.pharmacy.logo:
        mime = "image/png" if model.pharmacy.logo_type == "png" else "image/jpeg"
        logo = f"data:{mime};base64,{base64.b64encode(model.pharmacy.logo).decode()}"
    blocks: list[dict[str, Any]] = []
    for block in model.blocks:
        if isinstance(block, Heading):
            blocks.append({"type": "heading", "level": max(block.level, 2), "text": block.text})
        elif isinstance(block, Paragraph):
            blocks.append({"type": "paragraph", "style": block.style, "text": block.text})
        elif isinstance(block, Table):
            blocks.append(
                {
                    "type": "table",
                    "columns": block.columns,
                    "rows": block.rows,
                    "large": block.large,
                }
            )
        elif isinstance(block, AnswerBox):
            blocks.append({"type": "answer", "text": answer_text(block), "comment": COMMENT})
    page = (
        _environment()
        .get_template("document.html.j2")
        .render(model=model, blocks=blocks, logo=logo, large=model.kind == "plan_de_prise")
    )
    return page.encode()


RENDERERS = {"pdf": render_pdf, "docx": render_docx, "html": render_html}


def render(model: DocumentModel, fmt: str) -> bytes:
    try:
        renderer = RENDERERS[fmt]
    except KeyError as exc:
        raise RenderError(f"format inconnu : {fmt}") from exc
    return renderer(model)
