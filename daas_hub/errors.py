"""Errors that people read: each names where the problem is and how to fix it."""

from __future__ import annotations

import secrets


class SettingsError(Exception):
    """A site settings, proposals or profiles file that cannot be used.

    The message names the file, the entry inside it, what is wrong and the fix,
    so that an admin can act on it without reading a traceback.
    """

    def __init__(self, file: str, entry: str, problem: str, fix: str):
        self.file = str(file)
        self.entry = entry
        self.problem = problem
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}: {self.entry}" if self.entry else self.file
        return f"{where}: {self.problem}\n  Fix: {self.fix}"


class SourceUnavailable(Exception):
    """The proposal catalogue (or the identity store behind it) did not answer."""


def reference() -> str:
    """A short id that ties what a person was told to the detail in the hub's log."""
    return secrets.token_hex(4)


def with_reference(message: str, ref: str) -> str:
    """``message`` plus the reference to quote when asking for help."""
    return f"{message} (Reference {ref}: quote it when you ask for help.)"
