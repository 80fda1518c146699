"""Hot-swapping a session's avatar: `{"type": "switch", "avatar": NAME}` takes effect at the next
frame, the frames go on on the clock at the session's size, and an avatar that can't be loaded
is refused with the session going on."""

from __future__ import annotations

import asyncio
import base64
import json

import cv2
import numpy as np
import pytest
import websockets

from live_server import start_server, stop_server
from lipstream.audio.clock import SAMPLE_RATE
from lipstream.avatar.package import load_package
from lipstream.avatar.prepare import prepare
from lipstream.server import protocol as p
from lipstream.session import ManualClock
from lipstream.stream.audio_in import AudioFormat
from lipstream.stream.events import FrameOut, Status
from lipstream.stream.session import SessionConfig, SessionPipeline


@pytest.fixture(scope="module")
def mirrored_avatar(tmp_path_factory, portrait_path):
    """The bundled portrait mirrored left to right, prepared as the package "mirror"."""
    folder = tmp_path_factory.mktemp("mirror")
    image = cv2.imread(str(portrait_path))
    cv2.imwrite(str(folder / "mirror.png"), image[:, ::-1])
    return load_package(prepare(folder / "mirror.png", folder / "avatars" / "mirror"))


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def images(events) -> dict[int, np.ndarray]:
    return {e.index: cv2.imdecode(np.frombuffer(e.data, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.float32)
            for e in events if isinstance(e, FrameOut)}


def run(avatar, speech, then=None):
    """1 s of speech, a switch to `then` (if given), 1 s more: (frames by index, the switch's events)."""
    clock = ManualClock()
    pipeline = SessionPipeline(SessionConfig(preset="ultra_low", width=128), avatar, clock=clock)
    events = pipeline.audio(pcm16(speech[:SAMPLE_RATE]), AudioFormat(), clock.now())
    switched = pipeline.switch(avatar=then) if then is not None else []
    events += switched + pipeline.audio(pcm16(speech[SAMPLE_RATE : 2 * SAMPLE_RATE]), AudioFormat(), clock.now())
    return images(events + pipeline.flush()), switched


def test_the_switch_takes_effect_at_the_next_frame_with_no_gap(default_avatar, mirrored_avatar, speech):
    swapped, switched = run(default_avatar, speech, then=mirrored_avatar)
    plain, _ = run(default_avatar, speech)
    mirror, _ = run(mirrored_avatar, speech)
    status = [e for e in switched if isinstance(e, Status) and e.event == "switched"]
    assert status and status[0].detail["avatar"] == "mirror"
    assert sorted(swapped) == list(range(50)) and {im.shape for im in swapped.values()} == {(128, 128)}
    first_after = min(k for k in swapped if not np.array_equal(swapped[k], plain[k]))
    assert 20 <= first_after <= 30  # where the first second's frames end (the driver's look-ahead holds a few)
    for k in range(first_after, 50):  # from there on, the mirrored face, as a session started on it draws it
        to_mirror = np.abs(swapped[k] - mirror[k]).mean()
        assert to_mirror < 2.0 and to_mirror < np.abs(swapped[k] - plain[k]).mean() / 5, k


def test_the_switch_message_names_a_safe_avatar():
    assert p.parse_text('{"type": "switch", "avatar": "mirror"}', AudioFormat()).avatar == "mirror"
    with pytest.raises(p.ProtocolError) as refused:
        p.parse_text('{"type": "switch", "avatar": "../etc"}', AudioFormat())
    assert refused.value.code == p.FACE_MODEL_NOT_FOUND
    with pytest.raises(p.ProtocolError, match='an "avatar"'):
        p.parse_text('{"type": "switch"}', AudioFormat())


def test_a_served_session_switches_avatar_and_survives_an_unknown_one(tmp_path, mirrored_avatar, speech):
    avatars = tmp_path / "avatars"
    avatars.mkdir()
    (avatars / "mirror").symlink_to(mirrored_avatar.path, target_is_directory=True)
    server = start_server(tmp_path, max_sessions=1, workers=1)
    try:
        async def session():
            async with websockets.connect(server.ws) as ws:
                await ws.send(json.dumps({"type": "start", "preset": "ultra_low", "width": 128, "framing": "json"}))

                async def audio(start_s: float):
                    chunk = speech[int(start_s * SAMPLE_RATE) : int((start_s + 1) * SAMPLE_RATE)]
                    await ws.send(json.dumps({"type": "audio", "data": base64.b64encode(pcm16(chunk)).decode(),
                                              "sampleRate": SAMPLE_RATE, "channels": 1, "format": "pcm16"}))

                await audio(0)
                await ws.send(json.dumps({"type": "switch", "avatar": "nobody"}))
                await ws.send(json.dumps({"type": "switch", "avatar": "mirror"}))
                await audio(1)
                await ws.send(json.dumps({"type": "end"}))
                return [json.loads(raw) async for raw in ws if isinstance(raw, str)]

        messages = asyncio.run(asyncio.wait_for(session(), 90))
    finally:
        stop_server(server)
    errors = [m for m in messages if m["type"] == "error"]
    assert [(e["code"], e["fatal"]) for e in errors] == [(p.FACE_MODEL_NOT_FOUND, False)], errors
    switched = [m for m in messages if m.get("event") == "switched"]
    assert [m["avatar"] for m in switched] == ["mirror"]
    indices = [m["frameIndex"] for m in messages if m["type"] == "response_video" and not m["idle"]]
    after = [m for m in messages[messages.index(switched[0]):] if m["type"] == "response_video"]
    # on the clock, and going on after the switch (a loaded machine may drop some as late: the
    # session test above checks every frame)
    assert indices == sorted(set(indices)) and after, indices
    assert messages[-1]["event"] == "ended"
