"""What clients may see of an error: its message without the server's file paths.

Errors raised deep down name the files they failed on (`/srv/avatars/ann/manifest.json`); a
client only needs the last part, and the layout of the server's disk is none of its business.
"""

from __future__ import annotations

import re

# An absolute POSIX path of two or more parts (or a Windows drive path); the last part is kept.
_PATH = re.compile(r"(?<![\w./-])(?:[A-Za-z]:\\|/)(?:[^\s'\"/\\:]+[/\\])+(?=[^\s'\"/\\:])")


def public_message(text: str) -> str:
    """`text` with every absolute path cut to its last part ('/srv/avatars/ann' -> 'ann')."""
    return _PATH.sub("", text)
