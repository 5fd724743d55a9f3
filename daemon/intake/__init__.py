"""Intake: filesystem events and rescans become candidate files, and a file counts once it is
completely written (close-after-write, a rename into the inbox, or a settle time)."""
