"""``hygie catalog import`` and ``hygie interactions import``: the refresh paths of the data.

Both read a local folder or file (or download it first with ``--url``), check everything
before writing, write in one transaction, and audit the import as ``system:cli``. Any
failure ends with one line on stderr and a non-zero exit code; the data in force stays.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from pathlib import Path

import click
import httpx

from appliance.commands import (
    CLI_ACTOR,
    EXIT_FAILURE,
    EXIT_USAGE,
    audit_cli,
    fail,
    platform_session,
)
from appliance.platform import Platform
from services.medications import store as repository
from services.medications import thesaurus as knowledge
from services.medications.atc import assign_catalog, coverage_ratios
from services.medications.bdpm import FILES, BdpmFileError, folder_digest, parse_folder
from services.medications.logic import content_hash_name, encode_json
from services.medications.models import CatalogImportReport
from services.medications.thesaurus_pdf import (
    PdfWord,
    parse_entries,
    parse_index,
    read_pdf_words,
)

ACTOR = CLI_ACTOR
SHOWN_REJECTS = 10
DOWNLOAD_TIMEOUT_S = 120.0


def _audit(platform: Platform, object_type: str, object_id: str, outcome: str) -> None:
    safe_id = re.sub(r"[^A-Za-z0-9_.:-]", "-", object_id)[:128]
    audit_cli(platform, "import", object_type, safe_id, outcome, purpose="admin")


def _download(url: str, target: Path) -> None:
    try:
        with httpx.stream("GET", url, timeout=DOWNLOAD_TIMEOUT_S, follow_redirects=True) as reply:
            reply.raise_for_status()
            with target.open("wb") as handle:
                for chunk in reply.iter_bytes():
                    handle.write(chunk)
    except httpx.HTTPError as exc:
        fail(f"cannot download {url}: {exc}")


def _read_folder(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        fail(f"{folder} is not a folder of BDPM files", EXIT_USAGE)
    files: dict[str, bytes] = {}
    for spec in FILES:
        path = folder / f"{spec.stem}.txt"
        if path.exists():
            files[spec.stem] = path.read_bytes()
    return files


@click.group("catalog")
def catalog() -> None:
    """The BDPM medication catalog (specialities, boxes, ATC codes, supply status)."""


@catalog.command("import")
@click.argument("folder", required=False, type=click.Path(path_type=Path))
@click.option(
    "--url",
    help="Download the seven files first; '{name}' in the URL is replaced by each file name.",
)
@click.option("--edition", help="Edition label (default: the folder name).")
@click.option("--force", is_flag=True, help="Import even if these files are already in force.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    help="Write the full report (every rejected line) as JSON to this file.",
)
def catalog_import(
    folder: Path | None, url: str | None, edition: str | None, force: bool, report_path: Path | None
) -> None:
    """Import a BDPM folder: all files checked first, then swapped in in one transaction."""
    if (folder is None) == (url is None):
        fail("give either a FOLDER or --url", EXIT_USAGE)
    with tempfile.TemporaryDirectory(prefix="hygie-bdpm-") as scratch:
        if url is not None:
            folder = Path(scratch)
            for spec in FILES:
                _download(url.replace("{name}", f"{spec.stem}.txt"), folder / f"{spec.stem}.txt")
        assert folder is not None
        _import_catalog(folder, edition or folder.resolve().name, force, report_path)


def _import_catalog(folder: Path, edition: str, force: bool, report_path: Path | None) -> None:
    started = time.perf_counter()
    files = _read_folder(folder)
    digest = folder_digest(files)
    label = re.sub(r"[^A-Za-z0-9_.-]", "-", edition)[:64] or "bdpm"
    with platform_session() as platform:
        last = repository.last_import(platform.store, "catalog")
        if last is not None and last["sha256"] == digest and not force:
            click.echo(
                f"catalog {content_hash_name(last['edition'], digest)} is already in force "
                "(same files); nothing to do (--force to re-import)"
            )
            return
        try:
            data = parse_folder(files)
        except BdpmFileError as exc:
            _audit(platform, "catalog", label, "failure")
            fail(f"catalog import refused, the catalog in force is unchanged: {exc}")
        assigned, figures = assign_catalog(data)
        report = CatalogImportReport(
            edition=label,
            sha256=digest,
            files=data.files,
            counts={
                "specialities": len(data.specialities),
                "presentations": len(data.presentations),
                "components": len(data.components),
                "generic_memberships": len(data.generics),
                "conditions": len(data.conditions),
                "supply_entries": len(data.availability),
                "atc_direct": len(data.mitm),
                "atc_assigned": len(assigned),
            },
            coverage=figures,
            history_events=0,
        )
        final, _changes = repository.replace_catalog(
            platform.store, data, assigned, report, actor=ACTOR
        )
        _audit(platform, "catalog", content_hash_name(label, digest), "success")
    elapsed = time.perf_counter() - started
    if report_path is not None:
        report_path.write_text(encode_json(final))
    click.echo(f"catalog {content_hash_name(label, digest)} imported in {elapsed:.1f} s")
    for item in final.files:
        click.echo(
            f"  {item.file} ({item.encoding}): {item.lines} lines, {item.loaded} loaded, "
            f"{len(item.rejected)} rejected"
        )
        for rejected in item.rejected[:SHOWN_REJECTS]:
            click.echo(f"    line {rejected.line_no}: {rejected.reason}")
        if len(item.rejected) > SHOWN_REJECTS:
            click.echo(f"    ... {len(item.rejected) - SHOWN_REJECTS} more (see --report)")
    ratios = coverage_ratios(figures)
    click.echo(
        "ATC coverage: "
        + ", ".join(f"{name.replace('_', ' ')} {share:.1%}" for name, share in ratios.items())
    )
    click.echo(f"status history: {final.history_events} change(s) recorded")


@click.group("interactions")
def interactions() -> None:
    """The ANSM drug interaction thesaurus."""


@interactions.command("import")
@click.argument("thesaurus_pdf", required=False, type=click.Path(path_type=Path))
@click.option("--classes", "classes_pdf", type=click.Path(path_type=Path), help="Class index PDF.")
@click.option(
    "--substances", "substances_pdf", type=click.Path(path_type=Path), help="Substance index PDF."
)
@click.option("--url", help="Download the thesaurus PDF from this URL.")
@click.option("--classes-url", help="Download the class index PDF from this URL.")
@click.option("--substances-url", help="Download the substance index PDF from this URL.")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    help="Where to write the data file (default: the bundled data folder).",
)
def interactions_import(
    thesaurus_pdf: Path | None,
    classes_pdf: Path | None,
    substances_pdf: Path | None,
    url: str | None,
    classes_url: str | None,
    substances_url: str | None,
    output: Path | None,
) -> None:
    """Parse the thesaurus PDFs, map substances to ATC through the catalog, keep the result."""
    with tempfile.TemporaryDirectory(prefix="hygie-ansm-") as scratch:
        paths: dict[str, Path | None] = {}
        for name, local, remote in (
            ("thesaurus", thesaurus_pdf, url),
            ("classes", classes_pdf, classes_url),
            ("substances", substances_pdf, substances_url),
        ):
            if remote is not None:
                local = Path(scratch) / f"{name}.pdf"
                _download(remote, local)
            paths[name] = local
        thesaurus_path, classes_path = paths["thesaurus"], paths["classes"]
        if thesaurus_path is None or classes_path is None:
            fail("give the thesaurus PDF (or --url) and --classes (or --classes-url)", EXIT_USAGE)
        _import_thesaurus(thesaurus_path, classes_path, paths["substances"], output)


def _words(path: Path) -> list[PdfWord]:
    if not path.is_file():
        fail(f"{path} is not a file", EXIT_USAGE)
    try:
        return read_pdf_words(path)
    except Exception as exc:  # pdfminer raises many unrelated types for a bad file
        fail(f"{path} cannot be read as a PDF ({exc.__class__.__name__}); nothing was changed")


def _import_thesaurus(
    thesaurus_path: Path, classes_path: Path, substances_path: Path | None, output: Path | None
) -> None:
    started = time.perf_counter()
    parsed = parse_entries(_words(thesaurus_path))
    if not parsed.entries:
        fail(f"{thesaurus_path}: no interaction found; is it the ANSM thesaurus?")
    classes = parse_index(_words(classes_path))
    substances = parse_index(_words(substances_path)) if substances_path else []
    with platform_session() as platform:
        components = repository.catalog_components(platform.store)
        if not components:
            fail("import the BDPM catalog first ('hygie catalog import DIR'): it maps names to ATC")
        index = knowledge.SubstanceIndex(components, repository.catalog_atc(platform.store))
        catalog_edition = repository.catalog_edition(platform.store)
        try:
            data = knowledge.build(
                parsed,
                classes,
                substances,
                index,
                catalog_edition=catalog_edition,
                generated_by="hygie interactions import",
            )
        except ValueError as exc:
            _audit(platform, "thesaurus", parsed.edition, "failure")
            fail(f"thesaurus import refused, nothing was changed: {exc}")
        raw = knowledge.encode(data)
        digest = hashlib.sha256(raw).hexdigest()
        target = output or knowledge.DATA_DIR / f"ansm-thesaurus-{data.edition}.json"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(raw)
        except OSError as exc:
            fail(f"cannot write {target}: {exc}", EXIT_FAILURE)
        repository.record_thesaurus(platform.store, data.edition, digest, raw, ACTOR)
        _audit(platform, "thesaurus", f"ansm-{data.edition}:{digest[:12]}", "success")
    stats = data.stats
    click.echo(
        f"thesaurus {data.edition} imported in {time.perf_counter() - started:.1f} s: "
        f"{int(stats['pairs'])} pairs ({int(stats['directional_entries'])} entries), "
        f"{int(stats['classes'])} classes, {int(stats['substances'])} substances"
    )
    click.echo(
        f"substances mapped to ATC: {stats['substances_mapped_share']:.1%}; "
        f"{len(data.unmapped)} unmapped, {len(data.parse_warnings)} parse warnings, "
        f"{int(stats['pairs_with_warnings'])} pairs with warnings"
    )
    for name in data.unmapped:
        click.echo(f"  unmapped: {name}")
    click.echo(f"data file: {target}")
