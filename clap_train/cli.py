"""What every command-line tool does with a user's mistake: one line `PROG: error: MESSAGE`, exit status 2.

Used by `python -m clap_train`, `clap_train.evaluate`, `clap_train.export` and the `data_pipelines`
tools. A user error is one the user fixes in a flag, a config field or a path (`USER_ERRORS`); the
message names it. Anything else is a bug and keeps its traceback. This module imports nothing heavy,
so entry points can report bad input before torch and Lightning are imported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

# FileNotFoundError, NotADirectoryError, ... are OSErrors; PermissionError too (a path the user gave)
USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, FileExistsError, NotADirectoryError,
                                                IsADirectoryError, PermissionError, ValueError, KeyError)
EXIT_USER_ERROR = 2  # argparse's status for usage errors
METADATA_LINES = ("full_key:", "object_type=", "reference_type=", "Set the environment variable HYDRA_FULL_ERROR",
                  "See https://hydra.cc/docs")


def error_line(exc: BaseException) -> str:
    """The exception's message on one line: lines joined, without the `full_key:` / `object_type=` lines
    OmegaConf appends (Hydra's messages span lines: "Could not override 'x'. / To append ... use +x=1")."""
    message = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)  # KeyError quotes
    message = str(message).split("Config search path:")[0]  # Hydra's list of config sources
    if getattr(exc, "override", None) and exc.override not in message:  # Hydra's OverrideParseException
        message = f"cannot parse the override {exc.override!r}: {message}"
    lines = [line.strip() for line in message.splitlines()]
    kept = [line for line in lines if line and not line.startswith(METADATA_LINES)]
    return " ".join(kept) if kept else type(exc).__name__


def exit_with_error(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


@contextmanager
def reporting_user_errors(prog: str, errors: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn `USER_ERRORS` (+ `errors`) raised inside the block into one line on stderr and exit status 2."""
    try:
        yield
    except USER_ERRORS + tuple(errors) as exc:
        exit_with_error(prog, error_line(exc))


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the one-line error style (its default prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        exit_with_error(self.prog, f"{message} (see --help)")


def run_tool(main: Callable[[], int | None]) -> NoReturn:
    """Run a `data_pipelines` tool's `main()`. Those tools stop on bad input with `SystemExit("TOOL: message")`
    (so their Python callers can catch it); at the command line that becomes `TOOL: error: message`, status 2."""
    try:
        code = main()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            prog, _, message = exc.code.partition(": ")
            exit_with_error(prog, message or prog)
        raise
    sys.exit(code)
