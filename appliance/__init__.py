"""Hygie appliance: the platform every service builds on, and the composition root.

Platform modules (config, store, audit, security, resilience, observability) never import a
service; the composition root (``app``, ``cli``, ``web``) is the only place that does.
"""

import warnings
from importlib.metadata import PackageNotFoundError, version

# cryptography 51 warns when DSA is imported, which pyhanko (PDF signatures) does at import:
# the warning went to stderr of every command and broke the one-line CLI contract. Hygie
# signs with RSA/ECDSA only, so this one warning is dropped, the others are kept.
warnings.filterwarnings("ignore", message="DSA is deprecated", module="pyhanko")

try:
    __version__ = version("hygie")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"
