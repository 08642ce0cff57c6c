"""``hygie documents generate|sign|verify|export``: the API's operations for the counter's
terminal and scripts, audited as ``system:cli``. Messages for the counter are in French;
an error ends with one line and a non-zero exit code."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from appliance.commands import EXIT_FAILURE, EXIT_USAGE, fail, platform_session
from appliance.dependencies import RequestContext
from services.documents import signing, workflow
from services.documents.models import VerificationView

CLI_CONTEXT = RequestContext(actor="system:cli", role="system", client_addr="local", request_id="")
EXIT_NOT_VERIFIED = 6
KINDS = ("synthesis", "plan_de_prise", "fiche_conseil", "compte_rendu")


def _write(data: bytes, output: Path | None) -> None:
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        try:
            output.write_bytes(data)
        except OSError as exc:
            fail(f"écriture impossible de {output} : {exc}", EXIT_FAILURE)


def _error(exc: workflow.DocumentError) -> None:
    code = EXIT_USAGE if exc.status in (400, 404, 422) else EXIT_FAILURE
    fail(str(exc), code)


@click.group("documents")
def documents() -> None:
    """Documents du BPM : générer, signer, vérifier, exporter."""


@documents.command("generate")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("patient_id")
@click.option("--format", "fmt", type=click.Choice(["pdf", "docx", "html"]), default="pdf")
@click.option("--cycle", "cycle_id", default=None, help="Cycle BPM (fiche_conseil, compte_rendu).")
@click.option("--step", "step_index", type=click.IntRange(0, 20), default=None)
@click.option("--analysis", "analysis_id", default=None, help="Analyse enregistrée (an-...).")
@click.option("--generation", "generation_id", default=None, help="Brouillon LLM validé.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None)
def generate(
    kind: str,
    patient_id: str,
    fmt: str,
    cycle_id: str | None,
    step_index: int | None,
    analysis_id: str | None,
    generation_id: str | None,
    output: Path | None,
) -> None:
    """Génère un document KIND pour PATIENT_ID ; il est enregistré, son identifiant est
    affiché sur la sortie d'erreur, le fichier écrit dans OUTPUT (ou la sortie standard)."""
    with platform_session() as platform:
        try:
            view = workflow.generate_document(
                platform,
                CLI_CONTEXT,
                kind=kind,  # type: ignore[arg-type]
                patient_id=patient_id,
                fmt=fmt,  # type: ignore[arg-type]
                cycle_id=cycle_id,
                step_index=step_index,
                analysis_id=analysis_id,
                generation_id=generation_id,
            )
            _, content = workflow.document_content(platform, CLI_CONTEXT, view.id)
        except workflow.DocumentError as exc:
            _error(exc)
        click.echo(f"{view.id} {view.sha256}", err=True)
        _write(content, output)


@documents.command("sign")
@click.argument("document_id")
@click.option(
    "--pkcs12",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Fichier PKCS#12 (sinon le signataire configuré).",
)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None)
def sign(document_id: str, pkcs12: Path | None, output: Path | None) -> None:
    """Signe (PAdES) le PDF DOCUMENT_ID ; le mot de passe PKCS#12 ou le code PIN de la
    carte CPS est demandé, jamais passé en argument."""
    with platform_session() as platform:
        settings = platform.settings
        signer: signing.DocumentSigner | None = None
        if pkcs12 is not None:
            secret = click.prompt(
                "Mot de passe du fichier PKCS#12",
                hide_input=True,
                default="",
                show_default=False,
                err=True,
            )
            signer = signing.Pkcs12Signer(pkcs12, secret.encode() or None)
        elif settings.documents_signer == "card" or (
            settings.documents_pkcs11_module is not None and settings.documents_signer != "pkcs12"
        ):
            pin = click.prompt("Code PIN de la carte CPS", hide_input=True, err=True)
            signer = workflow.configured_signer(settings, pin=pin)
        try:
            view = workflow.sign_document(platform, CLI_CONTEXT, document_id, signer=signer)
            _, content = workflow.document_content(platform, CLI_CONTEXT, view.id)
        except workflow.DocumentError as exc:
            _error(exc)
        click.echo(f"{view.id} {view.sha256}", err=True)
        if output is not None:
            _write(content, output)


def _report(view: VerificationView) -> None:
    click.echo(f"{view.summary}")
    click.echo(f"signataire : {view.signer or '-'}")
    click.echo(f"signé le : {view.signed_at.isoformat() if view.signed_at else '-'}")
    if not (view.intact and view.valid and view.trusted):
        sys.exit(EXIT_NOT_VERIFIED)


@documents.command("verify")
@click.argument("target")
@click.option(
    "--trust-roots",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Autorités de confiance (PEM) ; sinon documents_trust_roots.",
)
def verify(target: str, trust_roots: Path | None) -> None:
    """Vérifie la signature d'un PDF : un fichier, ou l'identifiant d'un document enregistré.
    Code de sortie 6 quand la signature n'est pas valide, intacte et reconnue."""
    path = Path(target)
    with platform_session() as platform:
        try:
            if path.is_file():
                roots = workflow.trust_roots(platform.settings, trust_roots)
                view = workflow.verify_bytes(path.read_bytes(), roots, None)
            else:
                view = workflow.verify_document(platform, CLI_CONTEXT, target, roots=trust_roots)
        except workflow.DocumentError as exc:
            _error(exc)
        except OSError as exc:
            fail(f"{path} : {exc}", EXIT_USAGE)
    _report(view)


@documents.command("list")
@click.argument("patient_id")
def list_command(patient_id: str) -> None:
    """Liste les documents d'un patient (identifiant, type, format, date, signé, SHA-256)."""
    with platform_session() as platform:
        views = workflow.list_documents(platform, CLI_CONTEXT, patient_id)
    for view in views:
        signed = "signé" if view.signed_from else "-"
        click.echo(
            f"{view.id}\t{view.kind}\t{view.format}\t{view.created_at:%Y-%m-%d %H:%M}\t"
            f"{signed}\t{view.sha256}"
        )


@documents.command("download")
@click.argument("document_id")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None)
def download(document_id: str, output: Path | None) -> None:
    """Écrit le document DOCUMENT_ID (contrôlé contre son SHA-256) dans OUTPUT."""
    with platform_session() as platform:
        try:
            _, content = workflow.document_content(platform, CLI_CONTEXT, document_id)
        except workflow.DocumentError as exc:
            _error(exc)
    _write(content, output)


@documents.command("export")
@click.argument("kind", type=click.Choice(["bpm-status", "findings"]))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None)
def export(kind: str, output: Path | None) -> None:
    """Export CSV (séparateur ;) du statut BPM des patients ou des points relevés."""
    with platform_session() as platform:
        try:
            data = workflow.export_csv(platform, CLI_CONTEXT, kind)  # type: ignore[arg-type]
        except workflow.DocumentError as exc:
            _error(exc)
    _write(data, output)
