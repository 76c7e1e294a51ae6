"""structlog set up once: JSON lines when stderr is not a terminal, console when it is.

Unit tasks bind `unit=` (and `pid=`) through structlog.contextvars, which follow asyncio tasks,
so every event a unit's code logs carries its name without passing a logger around.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, get_args


def _import_structlog_without_rich() -> None:
    """Import structlog with `rich` hidden from it, unless something already imported rich.

    structlog.dev imports rich (which imports pygments) whenever it is installed, only to offer
    rich tracebacks to its console renderer. Our chain formats exceptions to plain text
    (format_exc_info) before any renderer, so rich is never called: in the daemon it was ~2 MB
    of resident heap and 70 modules for nothing. The block lasts for this one import only: a
    later `import rich` elsewhere in the process (a dev tool, a test) works as usual.
    """
    if "rich" in sys.modules or "structlog" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # makes `import rich` ImportError
    try:
        import structlog  # noqa: F401, PLC0415
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()

import structlog  # noqa: E402

# The one declaration of the formats: the config key and `sandboxd --log-format` take these.
LogFormat = Literal["auto", "json", "console"]
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)


def configure(fmt: LogFormat = "auto", level: int = logging.INFO) -> None:
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if use_console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str = "sandboxd") -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
