"""When the model on disk has changed: a new export swapped in by rename, or its files rewritten,
is noticed by a cheap ``stat`` of the IR and its card every ``model.check_seconds``; it is loaded
only once its files have stayed unchanged for one check, so a half-copied export is never picked
up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inspectd.errors import ModelError
from inspectd.export import card_path_for, locate_xml


@dataclass(frozen=True)
class FileStamp:
    path: str
    inode: int
    size: int
    mtime_ns: int


Fingerprint = tuple[FileStamp, ...]


def fingerprint(model_path: Path) -> Fingerprint:
    """Identity of the export's files as ``stat`` sees them; raises ModelError if incomplete."""
    xml = locate_xml(model_path)
    parts = [xml, xml.with_suffix(".bin")]
    card = card_path_for(xml)
    if card is not None:
        parts.append(card)
    stamps = []
    for part in parts:
        try:
            st = part.stat()
        except OSError as exc:
            raise ModelError(f"{part}: {exc.strerror}") from None
        stamps.append(FileStamp(str(part), st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


class ModelWatch:
    """Decides when to try loading the export again; the loop calls ``due`` and ``candidate``."""

    def __init__(self, model_path: Path, check_seconds: float, now: float) -> None:
        self.model_path = model_path
        self.check_seconds = check_seconds
        self.loaded: Fingerprint | None = self._stamp()
        self.refused: Fingerprint | None = None
        self._seen: Fingerprint | None = self.loaded
        self._next = now + check_seconds

    def _stamp(self) -> Fingerprint | None:
        try:
            return fingerprint(self.model_path)
        except ModelError:
            return None

    def due(self, now: float) -> bool:
        if self.check_seconds <= 0 or now < self._next:
            return False
        self._next = now + self.check_seconds
        return True

    def candidate(self, force: bool = False) -> Fingerprint | None:
        """A changed, settled export worth loading now, or None. ``force`` skips the settle check."""
        stamp = self._stamp()
        settled = force or stamp == self._seen
        self._seen = stamp
        if stamp is None or stamp == self.loaded or not settled:
            return None
        if stamp == self.refused and not force:
            return None  # already refused; wait for the files to change again
        return stamp

    def retarget(self, model_path: Path) -> None:
        self.model_path = model_path
