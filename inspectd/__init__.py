"""What training writes and the daemon reads: the export folder, its model card, image decoding,
the scorer, content hashes and the error classes. Imports neither ``daemon`` nor ``training``."""

__version__ = "0.1.0"
