"""lipstream: speech audio in, a lip-synced talking-face video of a chosen avatar out."""

__version__ = "0.1.0"
