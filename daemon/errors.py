"""The daemon's own errors; the base class and the model and image errors are ``inspectd.errors``.

Start-up problems (``ConfigError``) stop the daemon before it takes any file; the CLI turns them
into messages and exit codes.
"""

from inspectd.errors import InspectdError


class ConfigError(InspectdError):
    """The configuration is wrong; the message names the key and the fix."""


class DatabaseNotReady(InspectdError):
    """The results database is missing or not at this version's schema (reading never migrates)."""
