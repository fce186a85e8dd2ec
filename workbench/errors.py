"""User-facing errors.

Anything a user can cause (a missing dataset, a wrong parameter, a corrupt file, NaN in training)
raises a :class:`WorkbenchError` whose message says what happened *and what to do*. The CLI prints
such errors as one clean paragraph and exits with status 2; only genuine bugs show a traceback.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """An error the user can fix; its message must say how."""


class ParameterError(WorkbenchError):
    """A notebook or method parameter is unknown, of the wrong type, or out of range."""


class DataError(WorkbenchError):
    """A dataset is missing, corrupt, or does not match its manifest."""


class TrainingError(WorkbenchError):
    """Training diverged (NaN/inf loss) or cannot proceed with the given settings."""
