"""Hygie appliance: the platform every service builds on, and the composition root.

Platform modules (config, store, audit, security, resilience, observability) never import a
service; the composition root (``app``, ``cli``, ``web``) is the only place that does.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hygie")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"
