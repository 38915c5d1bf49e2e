"""The error style every clap_train command line shares: one line `clap_train: error: ...`, exit status 2.

    def main(argv=None):
        args = parser.parse_args(argv)
        with user_errors():
            ...
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

# Errors a user fixes in their arguments, files or config: reported in one line instead of a stack trace.
USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, KeyError)


def fail(message: str) -> None:
    """Print `clap_train: error: MESSAGE` (its first line) to stderr and exit with status 2."""
    first_line = (str(message).strip().splitlines() or [""])[0]
    print(f"clap_train: error: {first_line}", file=sys.stderr, flush=True)
    sys.exit(2)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the `USER_ERRORS` raised inside the block into `fail(...)`."""
    try:
        yield
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        fail(f"{type(error).__name__}: {message}")
