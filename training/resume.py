"""``--resume`` with a checkpoint written for another network: one line instead of Lightning's page.

The network is only complete once Lightning has set the model up (the teacher is built then), so
the checkpoint cannot be compared beforehand; torch's own ``load_state_dict`` error is read instead.
"""

from __future__ import annotations

import re
from pathlib import Path

from training.errors import TrainingError

LOAD_ERROR = "Error(s) in loading state_dict"
_SIZE = re.compile(
    r"size mismatch for (?P<key>\S+): copying a param with shape torch\.Size\((?P<saved>\[[^\]]*\])\) "
    r"from checkpoint, the shape in current model is torch\.Size\((?P<ours>\[[^\]]*\])\)"
)
_UNEXPECTED = re.compile(r'Unexpected key\(s\) in state_dict: "(?P<key>[^"]+)"')
_MISSING = re.compile(r'Missing key\(s\) in state_dict: "(?P<key>[^"]+)"')


def mismatch(exc: BaseException, checkpoint: Path) -> TrainingError | None:
    """The one-line error for a checkpoint that does not fit, or None when ``exc`` is not that."""
    text = str(exc)
    if LOAD_ERROR not in text:
        return None
    if found := _SIZE.search(text):
        what = f"{found['key']} is {found['saved']} there and {found['ours']} here"
    elif found := _UNEXPECTED.search(text):
        what = f"it holds {found['key']}, which this network has not"
    elif found := _MISSING.search(text):
        what = f"it lacks {found['key']}"
    else:
        what = text.splitlines()[0]
    return TrainingError(
        f"--resume: {checkpoint} was written for another network ({what}): by an older inspectd, or "
        "with another --model-size, --student-width, --teacher or --anomaly-map; resume with the "
        "options that wrote it, or train anew without --resume"
    )
