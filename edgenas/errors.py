"""Errors that carry a one-line, user-facing message.

Every error that a user can cause (a bad name, a bad path, an invalid architecture, an impossible
constraint) is raised as an :class:`EdgenasError`. The CLI prints its message on one line to stderr and
exits with code 2; the Python API lets it propagate.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgenasError(ValueError):
    """A problem with the user's input, explained in one line."""


class InvalidArchitecture(EdgenasError):
    """An architecture does not belong to its search space."""


class ConstraintUnsatisfiable(EdgenasError):
    """No architecture of the space can meet a constraint."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> EdgenasError:
    """Build the error for an unknown registry name: list the valid ones and suggest the closest."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return EdgenasError(f"unknown {kind} '{name}'; valid: {', '.join(valid)}{hint}")
