"""Errors that people read: each names where the problem is and how to fix it."""

from __future__ import annotations


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
