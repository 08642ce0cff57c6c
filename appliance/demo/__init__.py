"""The demo pharmacy (``hygie demo load``): composition-root side, so it may call every
service's public functions. See docs/demo.md."""

from appliance.demo.cli import demo

__all__ = ["demo"]
