"""The plugins without their framework installed: a clear error naming what to install."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("framework", ["livekit", "pipecat"])
def test_without_the_extra_the_import_says_what_to_install(framework):
    code = (f"import sys; sys.modules[{framework!r}] = None\n"
            f"try:\n    import lipstream.integrations.{framework}\n"
            "except Exception as e:\n    print(type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "NotSupportedError" in out and f"pip install 'lipstream[{framework}]'" in out
