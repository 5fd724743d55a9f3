"""One base error; the CLI turns these into messages and exit codes.

Per-file problems (``UnreadableImage``) quarantine one file and the loop goes on; start-up problems
(``ConfigError``, ``ModelError``) stop the daemon before it takes any file.
"""


class InspectdError(Exception):
    """Base of every error inspectd raises on purpose."""


class ConfigError(InspectdError):
    """The configuration is wrong; the message names the key and the fix."""


class ModelError(InspectdError):
    """The exported model is missing or cannot be loaded."""


class UnreadableImage(InspectdError):
    """A file in the inbox cannot be decoded as an image; it is quarantined with this reason."""


class InferenceFailed(InspectdError):
    """The model failed on one readable image; the file is quarantined with this reason."""


class DatabaseNotReady(InspectdError):
    """The results database is missing or not at this version's schema (reading never migrates)."""
