"""Logging for the command-line tools and the app, with nothing identifying on the console or in a log.

pydicom, highdicom and the decoders they call quote the values they complain about ("Invalid value
for VR PN: 'Doe^Jane'", "The string "Jane Doe" is unlikely to represent ... a person name"), and a
damaged file makes a decoder log a traceback. So: every record not written by liverview itself has
its quoted values withheld (`WithholdQuoted`), Python warnings are routed through logging to get the
same treatment, and the console shows one line per problem while the traceback goes to the log file
only (`ConsoleFormatter`).
"""
from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from logging.handlers import RotatingFileHandler
from pathlib import Path

from liverview.paths import user_data_dir

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|“[^”]*”")
WITHHELD = "'…'"


def withhold_quoted(text: str) -> str:
    """`text` with every quoted value replaced by '…'."""
    return _QUOTED.sub(WITHHELD, text)


class WithholdQuoted(logging.Filter):
    """Withholds the quoted values in the messages of other libraries' records (liverview's own
    messages are written not to quote patient data)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("liverview"):
            record.msg, record.args = withhold_quoted(record.getMessage()), None
        return True


class ConsoleFormatter(logging.Formatter):
    """One line per record: the traceback is for the log file, not the reader's terminal."""

    def format(self, record: logging.LogRecord) -> str:
        plain = logging.makeLogRecord(record.__dict__)
        plain.exc_info, plain.exc_text, plain.stack_info = None, None, None
        return super().format(plain)


def cli_log_path() -> Path:
    return user_data_dir() / "logs" / "liverview-cli.log"


def setup_cli_logging(verbose: bool = False, log_file: Path | None = None) -> Callable[[], None]:
    """Console (WARNING, INFO with `verbose`) plus a rotating log file with the tracebacks (default
    `cli_log_path()`; none when it cannot be written). Returns a function that removes both again."""
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(ConsoleFormatter("%(levelname)s %(name)s: %(message)s"))
    handlers: list[logging.Handler] = [console]
    try:
        path = log_file or cli_log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = RotatingFileHandler(path, maxBytes=2_000_000, backupCount=2, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(file_handler)
    except OSError:
        pass
    for handler in handlers:
        handler.addFilter(WithholdQuoted())
        root.addHandler(handler)
    logging.captureWarnings(True)

    def remove() -> None:
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)

    return remove


__all__ = ["ConsoleFormatter", "WithholdQuoted", "cli_log_path", "setup_cli_logging", "withhold_quoted"]
