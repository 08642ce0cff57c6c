"""Helpers for command-line code, shared by the ``hygie`` CLI and services' command groups.

Operator mistakes (bad configuration, missing or wrong key) end with a one-line message and
a documented exit code, never a traceback, whichever command hit them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click

from appliance.audit import AuditEvent
from appliance.config import ConfigError, Settings, load_settings
from appliance.keys import SecretError
from appliance.platform import Platform, open_platform
from appliance.store import StoreError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_STORE = 4

CLI_ACTOR = "system:cli"
"""Who a command run on the box itself acts as in the audit trail (root on the appliance)."""


def audit_cli(
    platform: Platform,
    action: str,
    object_type: str,
    object_id: str,
    outcome: str,
    *,
    purpose: str,
) -> None:
    """Record what a command did: commands reach patient data without a request, so they
    audit as the box's own operator rather than through a request context."""
    platform.audit.record(
        AuditEvent(
            actor=CLI_ACTOR,
            role="system",
            action=action,
            object_type=object_type,
            object_id=object_id,
            purpose=purpose,
            client_addr="local",
            outcome=outcome,
        )
    )


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"hygie: {message}", err=True)
    sys.exit(code)


@contextmanager
def operator_errors() -> Iterator[None]:
    """Turn the errors an operator can cause into messages and exit codes."""
    try:
        yield
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    except (SecretError, StoreError) as exc:
        fail(str(exc), EXIT_STORE)


def cli_settings() -> Settings:
    with operator_errors():
        return load_settings()


@contextmanager
def platform_session() -> Iterator[Platform]:
    """The opened platform for the duration of one command, closed afterwards."""
    settings = cli_settings()
    with operator_errors():
        platform = open_platform(settings)
    try:
        with operator_errors():
            yield platform
    finally:
        platform.close()
