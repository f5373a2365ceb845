"""smmu's logger: structlog events that emit nothing below WARNING unless the application
configures logging.

``structlog.get_logger()`` unconfigured prints every event, debug included, to stdout: a
library that used it would flood its users' test output. :func:`get_logger` returns a
logger that, while structlog is not configured, routes its events through the standard
library's ``logging`` logger ``"smmu"``: nothing below WARNING appears unless the application
sets a level or a handler (``logging.basicConfig(level=logging.DEBUG)``; smmu's command line
does, from ``-v``/``-q``), and warnings reach stderr through ``logging``'s last-resort handler
as any library's do. Once the application configures structlog itself, events follow its
configuration. smmu never configures either.
"""

from __future__ import annotations

import logging

import structlog

_STDLIB = logging.getLogger("smmu")


def _render(_logger, _name, event_dict) -> str:
    event = event_dict.pop("event", "")
    rest = " ".join(f"{k}={v!r}" if not isinstance(v, str) else f"{k}={v}"
                    for k, v in event_dict.items())
    return f"{event}: {rest}" if rest else str(event)


_ROUTED = structlog.wrap_logger(_STDLIB, wrapper_class=structlog.stdlib.BoundLogger,
                                processors=[structlog.stdlib.filter_by_level, _render],
                                cache_logger_on_first_use=True)


class SmmuLogger:
    """What :func:`get_logger` returns: ``debug``/``info``/``warning``/``error``/``exception``
    with structlog's ``event, **key_values`` signature."""

    __slots__ = ()

    @staticmethod
    def _target():
        return structlog.get_logger("smmu") if structlog.is_configured() else _ROUTED

    def debug(self, event, **kw):
        if structlog.is_configured() or _STDLIB.isEnabledFor(logging.DEBUG):
            self._target().debug(event, **kw)

    def info(self, event, **kw):
        if structlog.is_configured() or _STDLIB.isEnabledFor(logging.INFO):
            self._target().info(event, **kw)

    def warning(self, event, **kw):
        self._target().warning(event, **kw)

    def error(self, event, **kw):
        self._target().error(event, **kw)

    def exception(self, event, **kw):
        self._target().exception(event, **kw)

    def __repr__(self):
        return "<smmu logger: " + ("structlog, as configured>" if structlog.is_configured()
                                   else f"logging 'smmu', level "
                                   f"{logging.getLevelName(_STDLIB.getEffectiveLevel())}>")


_LOGGER = SmmuLogger()


def get_logger() -> SmmuLogger:
    """smmu's logger (see the module docstring): use it instead of ``structlog.get_logger``
    in library code."""
    return _LOGGER
