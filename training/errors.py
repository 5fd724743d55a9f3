"""The one error training raises on purpose; the CLI prints its message and exits non-zero."""

from inspectd.errors import InspectdError


class TrainingError(InspectdError):
    """Training or evaluation cannot proceed; the message says why and what to do instead."""
