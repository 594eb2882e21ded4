"""Logging for the command-line tools and the app, with nothing identifying on the console or in a log.

pydicom, highdicom and the decoders they call quote the values they complain about ("Invalid value
for VR PN: 'Doe^Jane'", "The string "Jane Doe" is unlikely to represent ... a person name"), and a
damaged file makes a decoder log a traceback. So: every record not written by liverview itself has
its quoted values withheld (`WithholdQuoted`), Python warnings are routed through logging to get the
same treatment, and the console shows one line per problem while the traceback goes to the log file
only (`ConsoleFormatter`); other libraries' warnings go to the file only (`OwnWarningsOnly`).
"""
from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from typing import TypeVar
from logging.handlers import RotatingFileHandler
from pathlib import Path

from liverview.paths import user_data_dir

T = TypeVar("T")

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


#: Libraries whose every failure liverview reports in its own words: their records go to the log file only.
RESTATED_LIBRARIES = ("pynetdicom",)


class OwnWarningsOnly(logging.Filter):
    """The console's share of other libraries' records: their errors. Their warnings restate, in their own
    terms, what liverview reports as the reason ("End of file reached before delimiter" for a file that
    is cut short); they go to the log file, as do the errors of `RESTATED_LIBRARIES` (pynetdicom's
    "TCP Initialisation Error" before liverview's "the PACS cannot be reached")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("liverview"):
            return True
        return record.levelno >= logging.ERROR and not record.name.startswith(RESTATED_LIBRARIES)


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
    if not verbose:
        console.addFilter(OwnWarningsOnly())
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


class CliFailed(Exception):
    """A command-line job failed with a reason that was already printed; its exit status is 1."""


def run_cli_job(prog: str, verbose: bool, job: Callable[[], T], expected: tuple[type[BaseException], ...]) -> T:
    """`job()` with the CLI's logging in place (removed afterwards). A failure the user can act on
    (`expected`, or a file that cannot be read or written) is printed as one line,
    "PROG: error: reason", and raised as `CliFailed`."""
    remove_logging = setup_cli_logging(verbose)
    try:
        return job()
    except expected as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise CliFailed(str(exc)) from exc
    except OSError as exc:
        print(f"{prog}: error: {describe_os_error(exc)}", file=sys.stderr)
        raise CliFailed(str(exc)) from exc
    finally:
        remove_logging()


def describe_os_error(exc: OSError) -> str:
    """"path: reason" of a failed read or write, in one line. pydicom re-raises a write's OSError as a new
    one whose message is "With tag … got exception: …" and a whole traceback; the reason is the original's."""
    root: BaseException = exc
    while isinstance(root.__cause__, OSError):
        root = root.__cause__
    reason = getattr(root, "strerror", None) or (str(root).strip().splitlines() or [type(root).__name__])[0]
    where = getattr(root, "filename", None) or exc.filename
    if isinstance(root, FileExistsError) and where and not os.path.isdir(where):
        reason = "is a file, not a folder: choose a folder"  # what mkdir's "File exists" means here
    elif isinstance(root, NotADirectoryError):
        reason = "part of this path is a file, not a folder: choose a folder"
    return f"{where}: {reason}" if where else reason


__all__ = ["CliFailed", "ConsoleFormatter", "WithholdQuoted", "cli_log_path", "describe_os_error", "run_cli_job",
           "setup_cli_logging", "withhold_quoted"]
