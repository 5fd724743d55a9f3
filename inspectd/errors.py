"""One base error, and the ones both sides raise about models and images.

Per-file problems (``UnreadableImage``, ``InferenceFailed``) quarantine one file and the daemon
goes on; a ``ModelError`` at start-up stops it before it takes any file. The command line turns
every ``InspectdError`` into a message and an exit code.
"""


class InspectdError(Exception):
    """Base of every error inspectd raises on purpose."""


class ModelError(InspectdError):
    """The exported model is missing or cannot be loaded."""


class UnreadableImage(InspectdError):
    """A file cannot be decoded as an image; the daemon quarantines it with this reason."""


class InferenceFailed(InspectdError):
    """The model failed on one readable image; the daemon quarantines it with this reason."""
