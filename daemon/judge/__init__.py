"""Judge: one complete file per ``Pipeline.step()``: hash, score, record the row, then file it
(claim, move, mark) with recovery after a crash. The filesystem, store and scorer are passed in."""
