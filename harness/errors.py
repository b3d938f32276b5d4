"""User-facing errors.

Anything the user can fix (a bad spec, a malformed data row, a missing file) raises
`InputError`. The CLI turns it into one line on stderr and exit code 2; everything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad input: the message names the file, the line (when known) and the field."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.line, self.field = file, line, field
        where = ""
        if file:
            where = f"{file}:{line}" if line else str(file)
        parts = [p for p in (where, f"'{field}'" if field else "") if p]
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class MissingDependencyError(InputError):
    """An optional dependency is needed; the message names the pip command."""


class ServiceError(RuntimeError):
    """An external service (a generation or judge server) kept failing after its retries.

    Not bad input and not a bug: the CLI prints one line and exits 1; everything finished
    is stored, so the same command resumes once the service answers again.
    """
