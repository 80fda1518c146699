"""Fixtures for the voice-agent plugins: a small avatar (cheap to render on a busy 2-core machine)."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from lipstream.avatar.prepare import prepare

SMALL_SIZE_PX = 256


@pytest.fixture(scope="session")
def small_avatar(tmp_path_factory, portrait_path) -> Path:
    """The bundled portrait at 256 x 256, prepared: what the plugin tests render."""
    folder = tmp_path_factory.mktemp("small-avatar")
    photo = folder / "portrait.png"
    image = cv2.imread(str(portrait_path))
    cv2.imwrite(str(photo), cv2.resize(image, (SMALL_SIZE_PX, SMALL_SIZE_PX), interpolation=cv2.INTER_AREA))
    return prepare(photo, folder / "avatar")
