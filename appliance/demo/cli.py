"""``hygie demo load``: a realistic demo pharmacy in the local store (French messages: the
person running it is the pharmacy's staff or a reviewer, not a developer)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click

from appliance.commands import EXIT_FAILURE, EXIT_USAGE, fail, platform_session
from appliance.demo import data
from appliance.demo.load import CATALOG_CANDIDATES, DemoRefused, foreign_patients, load_demo


@click.group("demo")
def demo() -> None:
    """Données de démonstration (pharmacie fictive)."""


def _catalog_folder(given: Path | None) -> Path:
    if given is not None:
        if not given.is_dir():
            fail(f"{given} n'est pas un dossier BDPM", EXIT_USAGE)
        return given
    for candidate in CATALOG_CANDIDATES:
        if (candidate / "CIS_bdpm.txt").is_file():
            return candidate
    fail(
        "aucun catalogue BDPM trouvé : importez-le ('hygie catalog import DOSSIER') ou "
        "indiquez --catalog DOSSIER",
        EXIT_USAGE,
    )
    raise AssertionError("unreachable")


@demo.command("load")
@click.option("--force", is_flag=True, help="Charger même si la base contient d'autres patients.")
@click.option(
    "--catalog",
    "catalog_dir",
    type=click.Path(path_type=Path),
    help="Dossier BDPM à importer si la base n'a pas encore de catalogue.",
)
@click.option(
    "--scans",
    type=click.IntRange(0, 10),
    default=3,
    show_default=True,
    help="Nombre d'ordonnances scannées de démonstration (OCR : quelques secondes chacune).",
)
def demo_load(force: bool, catalog_dir: Path | None, scans: int) -> None:
    """Charge une pharmacie de démonstration : 50 patients (dont 20 éligibles au BPM),
    traitements, analyses biologiques, historique de délivrance, comptes et ordonnances
    scannées. Relancer la commande n'ajoute rien."""
    from services.medications import knowledge_editions, lookup_cis

    with platform_session() as platform:
        foreign = foreign_patients(platform)
        if foreign and not force:
            fail(
                f"la base contient {len(foreign)} patient(s) hors démonstration : chargement "
                "refusé (ajoutez --force pour charger quand même)",
                EXIT_FAILURE,
            )
        edition = knowledge_editions(platform.store)["catalog"]
    if edition is None:
        folder = _catalog_folder(catalog_dir)
        click.echo(f"import du catalogue BDPM depuis {folder}")
        from services.medications.cli import catalog_import

        click.get_current_context().invoke(
            catalog_import, folder=folder, url=None, edition=None, force=False, report_path=None
        )
    today = date.today()
    with platform_session() as platform:
        edition = knowledge_editions(platform.store)["catalog"] or ""
        missing = [cis for cis in data.DRUGS if lookup_cis(platform.store, cis) is None]
        if missing:
            fail(
                f"le catalogue en vigueur ({edition}) ne contient pas les spécialités "
                f"{', '.join(missing)} de la démonstration",
                EXIT_FAILURE,
            )
        try:
            report = load_demo(platform, today=today, force=force, scans=scans, catalog=edition)
        except DemoRefused as exc:
            fail(str(exc), EXIT_FAILURE)
    click.echo(f"catalogue : {report.catalog}")
    click.echo(
        f"patients : {report.patients_created} créé(s), {report.patients_present} déjà présent(s) "
        f"(dont {data.ELIGIBLE} éligibles au BPM) ; {report.prescriptions} ordonnance(s), "
        f"{report.dispensings} ligne(s) de délivrance"
    )
    click.echo(f"ordonnances scannées : {report.scans_note}")
    for username in report.users_present:
        click.echo(f"compte {username} : déjà présent (mot de passe inchangé)")
    if report.users_created:
        click.echo(
            "comptes de démonstration (notez les mots de passe, ils ne seront plus affichés) :"
        )
        for username, role, password in report.users_created:
            click.echo(f"  {username}  ({role})  mot de passe : {password}")
