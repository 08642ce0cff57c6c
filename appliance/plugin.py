"""What a service hands to the composition root: its controllers, migrations and tasks.

Services depend on this small contract, not on the app factory, so adding a service never
means editing the platform.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from appliance.store import Migration

if TYPE_CHECKING:
    from huey import Huey

    from appliance.platform import Platform


@dataclass(frozen=True)
class ServicePlugin:
    """One domain service as the appliance mounts it."""

    name: str
    controllers: Sequence[Any] = field(default_factory=tuple)
    migrations: Sequence[Migration] = field(default_factory=tuple)
    register_tasks: Callable[[Huey, Platform], None] | None = None
    cli: click.Group | None = None
    """Commands mounted as ``hygie <group name> ...`` (e.g. ``hygie catalog import``)."""
