"""Where a verdict sends its image: the line's accepted/, rejected/, quarantine/ (and review/ while
the drift hold is latched), mirroring the inbox sub-folder the image arrived in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daemon.names import safe_name


@dataclass(frozen=True)
class Destinations:
    accepted: Path
    rejected: Path
    quarantine: Path
    review: Path | None = None  # accepted parts while the drift hold is latched

    def for_status(self, status: str) -> Path:
        return {"accepted": self.accepted, "rejected": self.rejected}.get(status, self.quarantine)

    def folder_for(self, status: str, sub_path: Path) -> Path:
        """The folder for ``status`` (or ``review``), with the inbox sub-folder mirrored under it."""
        root = self.review if status == "review" and self.review is not None else self.for_status(status)
        return root.joinpath(*(safe_name(part) for part in sub_path.parts))


def sub_path(inbox: Path, source: Path) -> Path:
    """The inbox sub-folder an image arrived in (recursive watching), else ``.``."""
    try:
        return source.parent.relative_to(inbox)
    except ValueError:
        return Path()
