"""``hygie models``: register local weights (checksum verified) and list what is present."""

from __future__ import annotations

from pathlib import Path

import click

from appliance.commands import EXIT_FAILURE, cli_settings, fail
from models.registry import ModelRegistry, RegistryError


def _registry() -> ModelRegistry:
    return ModelRegistry(cli_settings().llm_models_path)


@click.group("models")
def models_group() -> None:
    """Local LLM weights (the appliance downloads none)."""


@models_group.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="model name (default: the file or folder name)")
@click.option("--backend", type=click.Choice(["llama_cpp", "transformers"]))
@click.option("--sha256", help="expected checksum; refused when the weights differ")
@click.option("--context-length", type=click.IntRange(128, 1_048_576), default=2048)
@click.option("--licence", default="unknown")
@click.option("--intended-use", default="")
def add(
    path: Path,
    name: str | None,
    backend: str | None,
    sha256: str | None,
    context_length: int,
    licence: str,
    intended_use: str,
) -> None:
    """Register the GGUF file or transformers folder at PATH."""
    try:
        manifest = _registry().add(
            path,
            name=name,
            backend=backend,  # type: ignore[arg-type]
            sha256=sha256,
            context_length=context_length,
            licence=licence,
            intended_use=intended_use,
        )
    except RegistryError as exc:
        fail(str(exc), EXIT_FAILURE)
    click.echo(f"{manifest.name}\t{manifest.backend}\t{manifest.sha256}")


@models_group.command("list")
@click.option("--verify", is_flag=True, help="recompute each checksum")
def list_models(verify: bool) -> None:
    """Registered models: name, backend, present on disk, checksum (loaded: by the server)."""
    registry = _registry()
    for manifest in registry.manifests():
        present = Path(manifest.path).exists()
        state = "present" if present else "missing"
        if verify and present:
            state = "verified" if registry.verify(manifest.name) else "checksum-mismatch"
        click.echo(f"{manifest.name}\t{manifest.backend}\t{state}\t{manifest.sha256[:16]}")
