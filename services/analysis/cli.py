"""``hygie analyze PATH [PATH ...]``: analyse FHIR Bundles from files or stdin (``-``).

One path prints one JSON object; several print one JSON object per line, in input order,
each with ``source`` set to its path. A path that cannot be read or parsed ends the command
with a one-line message and exit code 1 (after the objects of the paths before it).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import msgspec

from appliance.commands import EXIT_FAILURE, EXIT_USAGE, fail, platform_session
from services.analysis.api import catalog_atc
from services.analysis.fhir import BundleError, parse
from services.analysis.logic import analyze
from services.medications import (
    current_thesaurus,
    interactions_for_specialities,
    knowledge_editions,
)

MAX_BYTES = 20 * 1024 * 1024


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read(MAX_BYTES + 1)
    with Path(path).open("rb") as handle:
        return handle.read(MAX_BYTES + 1)


class _CommandLikeGroup(click.Group):
    """A group so that the plugin contract (``cli: click.Group``) holds; it takes arguments
    and runs without a subcommand, so it reads (and its usage line reads) as a command."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return click.Command.collect_usage_pieces(self, ctx)


@click.group(
    cls=_CommandLikeGroup,
    name="analyze",
    invoke_without_command=True,
    context_settings={"ignore_unknown_options": False},
)
@click.argument("paths", nargs=-1, required=True)
def analyze_command(paths: tuple[str, ...]) -> None:
    """Analyse FHIR R4 Bundles (files, or - for stdin) and print the findings as JSON."""
    if paths.count("-") > 1:
        fail("stdin (-) can be read only once", EXIT_USAGE)
    today = datetime.now(UTC).date()
    with platform_session() as platform:
        store = platform.store
        thesaurus = current_thesaurus(store)
        knowledge = knowledge_editions(store)
        atc_for_cis = catalog_atc(store)
        for path in paths:
            try:
                raw = _read(path)
            except OSError as exc:
                fail(f"{path}: cannot read ({exc.strerror or exc})", EXIT_FAILURE)
            if len(raw) > MAX_BYTES:
                fail(f"{path}: larger than {MAX_BYTES // (1024 * 1024)} MiB", EXIT_FAILURE)
            try:
                record = parse(raw, today=today)
            except BundleError as exc:
                fail(f"{path}: {exc}", EXIT_FAILURE)
            result = analyze(
                record,
                thesaurus,
                source=path,
                knowledge=knowledge,
                specialities=lambda cis: interactions_for_specialities(store, cis),
                atc_for_cis=atc_for_cis,
            )
            click.echo(msgspec.json.encode(result).decode())
