"""Dependency rules: the platform never imports a service; services never import the
composition root (app factory, CLI, web UI); each service keeps the shared layout."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSITION_ROOT = {
    "appliance.app",
    "appliance.cli",
    "appliance.registry",
    "appliance.web",
    "appliance.demo",
}
SERVICE_LAYOUT = {"models.py", "store.py", "logic.py", "api.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


PLATFORM_FILES = [
    p
    for p in (ROOT / "appliance").rglob("*.py")
    if not any(_module_name(p).startswith(root) for root in COMPOSITION_ROOT)
]
SERVICE_FILES = list((ROOT / "services").rglob("*.py"))


@pytest.mark.parametrize("path", PLATFORM_FILES, ids=_module_name)
def test_platform_never_imports_a_service(path: Path) -> None:
    bad = {name for name in _imports(path) if name.split(".")[0] in {"services", "sync"}}
    bad |= {name for name in _imports(path) if name in COMPOSITION_ROOT}
    assert not bad, f"{_module_name(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", SERVICE_FILES, ids=_module_name)
def test_services_never_import_the_composition_root(path: Path) -> None:
    bad = {
        name
        for name in _imports(path)
        if any(name == root or name.startswith(root + ".") for root in COMPOSITION_ROOT)
    }
    assert not bad, f"{_module_name(path)} imports {sorted(bad)}"


def test_services_share_one_inner_layout() -> None:
    packages = [p for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()]
    assert packages, "no service package found"
    for package in packages:
        files = {p.name for p in package.iterdir() if p.suffix == ".py"}
        unexpected = files - SERVICE_LAYOUT - {"__init__.py"}
        assert files & SERVICE_LAYOUT, f"{package.name} has none of {sorted(SERVICE_LAYOUT)}"
        assert not unexpected or (package / "README.md").exists(), (
            f"{package.name}: extra modules {sorted(unexpected)} need a README saying why"
        )


def test_top_level_layout_exists() -> None:
    for name in (
        "appliance",
        "services",
        "drivers/cps_vitale",
        "models",
        "sync",
        "systemd",
        "tests",
        "benchmarks",
        "install.sh",
        "pyproject.toml",
        "README.md",
    ):
        assert (ROOT / name).exists(), name
