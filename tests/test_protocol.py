"""The WebSocket protocol: seed 002's JSON as written, our own messages, binary framing, fuzzing."""

import base64
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lipstream.server import protocol as p
from lipstream.stream.audio_in import AudioFormat
from lipstream.stream.events import AudioOut, FrameOut

# Seed 002's request, exactly as its document shows it ("data" there is a placeholder).
SEED_REQUEST = """{
  "type": "lipsync_audio",
  "sessionId": "session-123",
  "userId": "user-456",
  "audioChunk": {
    "data": "base64_encoded_audio",
    "timestamp": 1705312200000,
    "sequenceNumber": 0,
    "sampleRate": 16000,
    "channels": 1,
    "format": "pcm"
  },
  "faceModelId": "face-model-789",
  "modelPreference": "tpsm"
}"""
SEED_RESPONSE_KEYS = {"type", "sessionId", "turnId", "frameData", "sequenceNumber", "timestamp", "audioTimestamp",
                      "format", "isKeyframe"}


def seed_request(data: bytes, **changes) -> str:
    obj = json.loads(SEED_REQUEST)
    obj["audioChunk"]["data"] = base64.b64encode(data).decode()
    obj.update(changes)
    return json.dumps(obj)


def test_seed_002_request_as_written():
    with pytest.raises(p.ProtocolError) as err:  # its placeholder is not base64: a clear error, no crash
        p.parse_text(SEED_REQUEST)
    assert err.value.code == p.BAD_MESSAGE and "base64" in str(err.value)
    pcm = np.arange(320, dtype="<i2").tobytes()
    audio = p.parse_text(seed_request(pcm))
    assert isinstance(audio, p.Audio) and audio.data == pcm
    assert audio.fmt == AudioFormat(16000, 1, "pcm16") and audio.sequence == 0
    assert audio.session_id == "session-123" and audio.model_preference == "tpsm"
    assert audio.seed_start.config.avatar == "face-model-789"
    # a seed-002 session gets the frames of its audio (silent ones too) and no idle frames
    config = audio.seed_start.config
    assert (config.idle_frames, config.silent_frames) == (False, True)
    asked = json.loads(seed_request(pcm))
    asked["idleFrames"] = True
    assert p.parse_text(json.dumps(asked)).seed_start.config.idle_frames is True


def test_seed_002_response_shape():
    frame = FrameOut(index=3, pts=1920, span=640, data=b"\xff\xd8\xff jpeg", keyframe=True, idle=False,
                     ready_s=0.0, deadline_s=1.0, renderer="warp", mouth=np.zeros(4, np.float32))
    msg = json.loads(p.frame_json(frame, "session-123", "turn-001", 7, 1705312200050, "jpeg"))
    assert SEED_RESPONSE_KEYS <= set(msg)
    assert msg["type"] == "response_video" and msg["turnId"] == "turn-001" and msg["sequenceNumber"] == 7
    assert msg["audioTimestamp"] == 120 and msg["pts"] == 1920 and msg["durationMs"] == 40
    assert base64.b64decode(msg["frameData"]) == frame.data and msg["isKeyframe"] is True


def test_start_with_every_field():
    start = p.parse_text(json.dumps({
        "type": "start", "sessionId": "abc", "avatar": "ann", "preset": "ultra_low", "format": "h264", "fps": 30,
        "width": 256, "height": 256, "renderer": "warp", "driver": "energy", "idleFrames": False,
        "returnAudio": True, "framing": "binary", "sampleRate": 48000, "channels": 2, "audioFormat": "f32"}))
    c = start.config
    assert (c.avatar, c.preset, c.format, c.fps, c.width, c.height, c.renderer, c.driver) == \
        ("ann", "ultra_low", "h264", 30.0, 256, 256, "warp", "energy")
    assert not c.idle_frames and c.return_audio and start.framing == "binary" and start.session_id == "abc"
    assert start.audio_format == AudioFormat(48000, 2, "f32")
    defaults = p.parse_text('{"type": "start"}')
    assert defaults.config.avatar == "default" and defaults.config.preset == "low" and defaults.framing == "json"


def test_audio_takes_the_session_format_as_default():
    data = np.zeros(96, "<f4").tobytes()
    audio = p.parse_text(json.dumps({"type": "audio", "data": base64.b64encode(data).decode()}),
                         AudioFormat(48000, 2, "f32"))
    assert audio.fmt == AudioFormat(48000, 2, "f32") and audio.data == data


@pytest.mark.parametrize("text,code", [
    ("not json", p.BAD_MESSAGE),
    ("[1, 2]", p.BAD_MESSAGE),
    ('{"type": "dance"}', p.BAD_MESSAGE),
    ('{"no": "type"}', p.BAD_MESSAGE),
    ('{"type": "start", "fps": NaN}', p.BAD_MESSAGE),
    ('{"type": "start", "fps": 1000}', p.BAD_MESSAGE),
    ('{"type": "start", "width": "big"}', p.BAD_MESSAGE),
    ('{"type": "start", "preset": "turbo"}', p.UNSUPPORTED),
    ('{"type": "start", "format": "gif"}', p.UNSUPPORTED),
    ('{"type": "start", "avatar": "../../etc"}', p.FACE_MODEL_NOT_FOUND),
    ('{"type": "start", "avatar": "/abs/path"}', p.FACE_MODEL_NOT_FOUND),
    ('{"type": "start", "idleFrames": "yes"}', p.BAD_MESSAGE),
    ('{"type": "start", "sampleRate": 100}', p.BAD_MESSAGE),
    ('{"type": "audio"}', p.BAD_MESSAGE),
    ('{"type": "audio", "data": "AAA"}', p.BAD_MESSAGE),
    ('{"type": "audio", "data": "AAAA"}', p.AUDIO_PROCESSING_FAILED),
    ('{"type": "audio", "data": "AAAA", "format": "mp3"}', p.BAD_MESSAGE),
    ('{"type": "lipsync_audio", "audioChunk": "x"}', p.BAD_MESSAGE),
    ('{"type": "switch"}', p.BAD_MESSAGE),
    ('{"type": "switch", "renderer": "../x"}', p.BAD_MESSAGE),
    ('{"type": "ping", "id": [1]}', p.BAD_MESSAGE),
    ('{"type": "start", "sessionId": "bad id with spaces"}', p.BAD_MESSAGE),
])
def test_bad_messages_get_a_code_and_a_reason(text, code):
    with pytest.raises(p.ProtocolError) as err:
        p.parse_text(text)
    assert err.value.code == code and str(err.value)


def test_oversized_messages():
    with pytest.raises(p.ProtocolError) as err:
        p.parse_text(" " * (p.MAX_MESSAGE_BYTES + 1))
    assert err.value.code == p.MESSAGE_TOO_LARGE
    big = base64.b64encode(bytes(p.MAX_AUDIO_BYTES + 2)).decode()
    with pytest.raises(p.ProtocolError) as err:
        p.parse_text(json.dumps({"type": "audio", "data": big}))
    assert err.value.code == p.MESSAGE_TOO_LARGE


def test_binary_audio_round_trip():
    samples = np.linspace(-1, 1, 960 * 2).astype("<f4")
    data = p.AUDIO_IN.pack(p.KIND_AUDIO_IN, 2, 2, 48000, 41) + samples.tobytes()
    audio = p.parse_binary(data)
    assert audio.fmt == AudioFormat(48000, 2, "f32") and audio.sequence == 41 and audio.data == samples.tobytes()


@pytest.mark.parametrize("data", [b"", b"\x01\x01", p.AUDIO_IN.pack(9, 1, 1, 16000, 0),
                                  p.AUDIO_IN.pack(1, 7, 1, 16000, 0), p.AUDIO_IN.pack(1, 1, 0, 16000, 0),
                                  p.AUDIO_IN.pack(1, 1, 1, 1, 0), p.AUDIO_IN.pack(1, 1, 2, 16000, 0) + b"\x00\x00"])
def test_bad_binary_messages(data):
    with pytest.raises(p.ProtocolError):
        p.parse_binary(data)


def test_binary_frame_and_audio_headers():
    frame = FrameOut(index=90000, pts=57_600_000, span=640, data=b"img", keyframe=True, idle=True,
                     ready_s=0.0, deadline_s=0.0, renderer="warp", mouth=np.zeros(4, np.float32))
    out = p.frame_binary(frame, 5, "h264")
    kind, fmt, flags, _, seq, index, pts, span = p.FRAME_OUT.unpack_from(out)
    assert (kind, fmt, flags, seq, index, pts, span) == (2, 2, 3, 5, 90000, 57_600_000, 640)
    assert out[p.FRAME_OUT.size :] == b"img"
    echo = p.audio_binary(AudioOut(pts=320, pcm16=b"\x01\x00", sample_rate=16000, channels=1))
    assert struct.unpack_from("<BBHIQ", echo) == (3, 1, 1, 16000, 320) and echo[16:] == b"\x01\x00"


# -- fuzzing: whatever arrives, the parser answers with a ProtocolError or a message ----------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_fields = st.sampled_from(["type", "data", "sampleRate", "channels", "format", "avatar", "preset", "fps", "width",
                           "height", "renderer", "driver", "idleFrames", "framing", "sessionId", "audioChunk",
                           "faceModelId", "modelPreference", "sequenceNumber", "id", "audioFormat"])
_messages = st.builds(
    lambda kind, extra: json.dumps({"type": kind, **extra}),
    st.sampled_from(["start", "audio", "lipsync_audio", "flush", "switch", "end", "ping", "other"]),
    st.dictionaries(_fields, _json_values | st.just("AAAA") | st.just({"data": "AAAA"}), max_size=6),
)


def _parses_or_refuses(parse, payload) -> None:
    try:
        parse(payload)
    except p.ProtocolError as exc:
        assert exc.code and str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_messages)
def test_fuzz_structured_messages(text):
    _parses_or_refuses(p.parse_text, text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_any_text(text):
    _parses_or_refuses(p.parse_text, text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_any_bytes(data):
    _parses_or_refuses(p.parse_binary, data)
