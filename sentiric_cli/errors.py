"""The project's one error type: a user mistake with a message and a next step.

Library code raises it; only the CLI entry point turns it into one line and exit code 2.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SentiricError(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
