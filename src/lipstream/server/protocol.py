"""The WebSocket protocol: parsing and validating client messages, encoding server messages.

Two framings share one set of messages (docs/protocol.md has examples):
- JSON text messages, including seed 002's `lipsync_audio` (base64 PCM; the first one starts a
  session implicitly, with `faceModelId` naming the avatar) answered by `response_video`;
- compact binary messages, little-endian: audio in (AUDIO_IN header, then samples) and frames
  and echoed audio out (FRAME_OUT / AUDIO_OUT headers, then the bytes).

Every parse error is a `ProtocolError` with a code and a message saying what to fix; nothing a
client sends can raise anything else from here.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from dataclasses import dataclass, field

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.avatar.resolve import SAFE_NAME
from lipstream.stream.audio_in import MAX_CHANNELS, MAX_RATE_HZ, MIN_RATE_HZ, AudioFormat
from lipstream.stream.encode import FORMATS
from lipstream.stream.events import AudioOut, FrameOut
from lipstream.session.presets import DEFAULT_PRESET, PRESETS
from lipstream.session.size import MAX_SIDE_PX, MIN_SIDE_PX
from lipstream.stream.session import SessionConfig

MAX_MESSAGE_BYTES = 2 * 2**20  # one WebSocket message, either framing
MAX_AUDIO_BYTES = 1536 * 1024  # decoded audio of one chunk (1 s of 48 kHz 8-channel float32)
MAX_ID_CHARS = 128
MIN_FPS, MAX_FPS = 1.0, 60.0

# Binary headers (little-endian). Audio in: kind, encoding, channels, sample rate, sequence.
AUDIO_IN = struct.Struct("<BBHII")
# Frame out: kind, format, flags, reserved, sequence, frame index, pts (samples), span (samples).
FRAME_OUT = struct.Struct("<BBBBIIQI")
# Audio out: kind, encoding, channels, sample rate, pts (samples).
AUDIO_OUT = struct.Struct("<BBHIQ")
KIND_AUDIO_IN, KIND_FRAME_OUT, KIND_AUDIO_OUT = 0x01, 0x02, 0x03
FLAG_KEYFRAME, FLAG_IDLE = 0x01, 0x02
ENCODING_CODES = {1: "pcm16", 2: "f32", 3: "opus"}
FORMAT_CODES = {"jpeg": 1, "h264": 2}
AUDIO_ENCODINGS = {"pcm": "pcm16", "pcm16": "pcm16", "pcm_s16le": "pcm16", "s16": "pcm16", "s16le": "pcm16",
                   "f32": "f32", "float32": "f32", "pcm_f32le": "f32", "f32le": "f32", "opus": "opus"}
DEFAULT_AUDIO = AudioFormat()  # PCM16 mono 16 kHz
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_ID = re.compile(r"^[\x21-\x7e]{1,128}$")

# Error codes: seed 002's where one fits, ours otherwise.
BAD_MESSAGE = "BAD_MESSAGE"
UNAUTHORIZED = "UNAUTHORIZED"
SESSION_LIMIT = "SESSION_LIMIT"
NO_SESSION = "NO_SESSION"
MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
UNSUPPORTED = "UNSUPPORTED"
FACE_MODEL_NOT_FOUND = "FACE_MODEL_NOT_FOUND"
AUDIO_PROCESSING_FAILED = "AUDIO_PROCESSING_FAILED"
VIDEO_GENERATION_FAILED = "VIDEO_GENERATION_FAILED"
BUFFER_OVERFLOW = "BUFFER_OVERFLOW"
RATE_LIMITED = "RATE_LIMITED"
TIMEOUT = "TIMEOUT"
INTERNAL = "INTERNAL"
ERROR_CODES_BY_KIND = {
    "BadAudioError": AUDIO_PROCESSING_FAILED,
    "BadAvatarError": FACE_MODEL_NOT_FOUND,
    "NotSupportedError": UNSUPPORTED,
    "RenderFailedError": VIDEO_GENERATION_FAILED,
    "MissingProfilesError": UNSUPPORTED,
    "InternalError": INTERNAL,
}


class ProtocolError(Exception):
    """A message that can't be used: `code` for programs, the message for people."""

    def __init__(self, code: str, message: str, fatal: bool = False):
        super().__init__(message)
        self.code = code
        self.fatal = fatal


# -- client messages -------------------------------------------------------------------------


@dataclass
class Start:
    """Start a session (explicitly, or implied by seed 002's first `lipsync_audio`)."""

    config: SessionConfig
    session_id: str | None = None
    framing: str = "json"
    audio_format: AudioFormat = field(default_factory=AudioFormat)


@dataclass
class Audio:
    """One chunk of PCM: `data` laid out as `fmt` says (interleaved, little-endian); or, with
    `fmt.encoding` "opus", one raw Opus packet (the connection decodes it)."""

    data: bytes
    fmt: AudioFormat
    sequence: int | None = None
    session_id: str | None = None
    seed_start: Start | None = None  # what a seed-002 chunk asks for, if it starts the session
    model_preference: str | None = None


@dataclass
class Flush:
    """End of turn: make the frames for all audio sent so far."""


@dataclass
class Switch:
    """Change renderer, driver and/or avatar mid-session (from the next frame on)."""

    renderer: str | None = None
    driver: str | None = None
    avatar: str | None = None


@dataclass
class End:
    """End the session cleanly: remaining frames, final stats, close."""


@dataclass
class Ping:
    """Answered with a pong carrying the same `id`."""

    id: str | int | None = None


Message = Start | Audio | Flush | Switch | End | Ping


def parse_text(text: str, defaults: AudioFormat = DEFAULT_AUDIO) -> Message:
    """A JSON text message; `defaults` fill audio fields a chunk leaves out."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise _too_large(len(text))
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(BAD_MESSAGE, f"not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(BAD_MESSAGE, "a message must be a JSON object with a \"type\"")
    kind = obj.get("type")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise ProtocolError(BAD_MESSAGE, f"unknown message type {str(kind)[:40]!r}; use one of: {', '.join(_PARSERS)}")
    return parser(obj, defaults)


def parse_binary(data: bytes) -> Audio:
    """A binary audio message: AUDIO_IN header, then interleaved little-endian samples."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise _too_large(len(data))
    if len(data) < AUDIO_IN.size:
        raise ProtocolError(BAD_MESSAGE, f"a binary message of {len(data)} bytes is shorter than the "
                                         f"{AUDIO_IN.size} byte audio header")
    kind, encoding, channels, rate, sequence = AUDIO_IN.unpack_from(data)
    if kind != KIND_AUDIO_IN:
        raise ProtocolError(BAD_MESSAGE, f"binary message kind {kind:#04x} is not audio ({KIND_AUDIO_IN:#04x})")
    if encoding not in ENCODING_CODES:
        raise ProtocolError(BAD_MESSAGE, f"audio encoding code {encoding} is unknown: 1 = pcm16, 2 = f32, 3 = opus")
    fmt = _audio_format(rate, channels, ENCODING_CODES[encoding])
    return Audio(_audio_bytes(data[AUDIO_IN.size :], fmt), fmt, sequence)


def _parse_start(obj: dict, defaults: AudioFormat) -> Start:
    config = SessionConfig(
        avatar=_avatar(obj.get("avatar", "default")),
        preset=_choice(obj, "preset", tuple(PRESETS), DEFAULT_PRESET),
        format=_choice(obj, "format", FORMATS, "jpeg"),
        fps=_number(obj, "fps", MIN_FPS, MAX_FPS),
        width=_integer(obj, "width", MIN_SIDE_PX, MAX_SIDE_PX),
        height=_integer(obj, "height", MIN_SIDE_PX, MAX_SIDE_PX),
        renderer=_name(obj, "renderer"),
        driver=_name(obj, "driver"),
        idle_frames=_boolean(obj, "idleFrames", True),
        return_audio=_boolean(obj, "returnAudio", False),
    )
    fmt = _audio_format(
        _integer(obj, "sampleRate", MIN_RATE_HZ, MAX_RATE_HZ) or defaults.sample_rate,
        _integer(obj, "channels", 1, MAX_CHANNELS) or defaults.channels,
        _encoding(obj, "audioFormat") or defaults.encoding,
    )
    return Start(config, _session_id(obj), _choice(obj, "framing", ("json", "binary"), "json"), fmt)


def _parse_audio(obj: dict, defaults: AudioFormat) -> Audio:
    fmt = _chunk_format(obj, defaults)
    return Audio(_base64_audio(obj, fmt), fmt, _integer(obj, "sequenceNumber", 0, 2**53), _session_id(obj))


def _parse_lipsync_audio(obj: dict, defaults: AudioFormat) -> Audio:
    """Seed 002's request: the audio is in `audioChunk`; `faceModelId` names the avatar."""
    chunk = obj.get("audioChunk")
    if not isinstance(chunk, dict):
        raise ProtocolError(BAD_MESSAGE, "lipsync_audio needs an \"audioChunk\" object with the base64 \"data\"")
    fmt = _chunk_format(chunk, defaults)
    preference = obj.get("modelPreference")
    preference = preference if isinstance(preference, str) and _NAME.fullmatch(preference) else None
    # A seed-002 client knows nothing of idle frames: it gets the frames of its audio (silent
    # stretches included, so they come at the frame rate), and idle frames only if it asks.
    config = SessionConfig(avatar=_avatar(obj.get("faceModelId", "default")),
                           idle_frames=_boolean(obj, "idleFrames", False), silent_frames=True)
    start = Start(config, _session_id(obj), "json", fmt)
    return Audio(_base64_audio(chunk, fmt), fmt, _integer(chunk, "sequenceNumber", 0, 2**53), start.session_id,
                 seed_start=start, model_preference=preference)


def _parse_switch(obj: dict, defaults: AudioFormat) -> Switch:
    switch = Switch(_name(obj, "renderer"), _name(obj, "driver"),
                    _avatar(obj["avatar"]) if obj.get("avatar") is not None else None)
    if not (switch.renderer or switch.driver or switch.avatar):
        raise ProtocolError(BAD_MESSAGE, "switch needs a \"renderer\", a \"driver\" or an \"avatar\" to change to")
    return switch


def _parse_ping(obj: dict, defaults: AudioFormat) -> Ping:
    ident = obj.get("id")
    short = isinstance(ident, (int, str)) and not isinstance(ident, bool) and len(str(ident)) <= 64
    if ident is not None and not short:
        raise ProtocolError(BAD_MESSAGE, "ping \"id\" must be a short string or an integer")
    return Ping(ident)


_PARSERS = {
    "start": _parse_start,
    "audio": _parse_audio,
    "lipsync_audio": _parse_lipsync_audio,
    "flush": lambda obj, defaults: Flush(),
    "switch": _parse_switch,
    "end": lambda obj, defaults: End(),
    "ping": _parse_ping,
}


# -- field validation ------------------------------------------------------------------------


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _integer(obj: dict, key: str, low: int, high: int) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError(BAD_MESSAGE, f"\"{key}\" must be an integer from {low} to {high}")
    return value


def _number(obj: dict, key: str, low: float, high: float) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not numeric or not low <= value <= high:
        raise ProtocolError(BAD_MESSAGE, f"\"{key}\" must be a number from {low:g} to {high:g}")
    return float(value)


def _boolean(obj: dict, key: str, default: bool) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError(BAD_MESSAGE, f"\"{key}\" must be true or false")
    return value


def _choice(obj: dict, key: str, choices: tuple[str, ...], default: str) -> str:
    value = obj.get(key, default)
    if value not in choices:
        raise ProtocolError(BAD_MESSAGE if not isinstance(value, str) else UNSUPPORTED,
                            f"\"{key}\" must be one of: {', '.join(choices)}")
    return value


def _name(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ProtocolError(BAD_MESSAGE, f"\"{key}\" must be a name like \"warp\" (lower-case letters, digits, _)")
    return value


def _avatar(value) -> str:
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        raise ProtocolError(FACE_MODEL_NOT_FOUND, "the avatar must be a name like \"default\" (letters, digits, "
                                                  "'.', '_', '-'; no paths)")
    return value


def _session_id(obj: dict) -> str | None:
    value = obj.get("sessionId")
    if value is None:
        return None
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ProtocolError(BAD_MESSAGE, f"\"sessionId\" must be 1-{MAX_ID_CHARS} printable ASCII characters")
    return value


def _encoding(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in AUDIO_ENCODINGS:
        raise ProtocolError(BAD_MESSAGE, f"\"{key}\" must be pcm (16-bit), f32 or opus")
    return AUDIO_ENCODINGS[value.lower()]


def _audio_format(rate: int, channels: int, encoding: str) -> AudioFormat:
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise ProtocolError(AUDIO_PROCESSING_FAILED, f"sample rate {rate} Hz is out of range "
                                                     f"({MIN_RATE_HZ}-{MAX_RATE_HZ})")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ProtocolError(AUDIO_PROCESSING_FAILED, f"{channels} channels is out of range (1-{MAX_CHANNELS})")
    return AudioFormat(rate, channels, encoding)


def _chunk_format(obj: dict, defaults: AudioFormat) -> AudioFormat:
    return _audio_format(
        _integer(obj, "sampleRate", MIN_RATE_HZ, MAX_RATE_HZ) or defaults.sample_rate,
        _integer(obj, "channels", 1, MAX_CHANNELS) or defaults.channels,
        _encoding(obj, "format") or defaults.encoding,
    )


def _base64_audio(obj: dict, fmt: AudioFormat) -> bytes:
    text = obj.get("data")
    if not isinstance(text, str):
        raise ProtocolError(BAD_MESSAGE, "audio needs \"data\": the PCM bytes as a base64 string")
    if len(text) > MAX_AUDIO_BYTES * 4 // 3 + 4:
        raise ProtocolError(MESSAGE_TOO_LARGE, f"an audio chunk is over {MAX_AUDIO_BYTES} bytes; send at most 1 s each")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(BAD_MESSAGE, "\"data\" is not valid base64") from None
    return _audio_bytes(data, fmt)


def _audio_bytes(data: bytes, fmt: AudioFormat) -> bytes:
    if len(data) > MAX_AUDIO_BYTES:
        raise ProtocolError(MESSAGE_TOO_LARGE, f"an audio chunk is over {MAX_AUDIO_BYTES} bytes; send at most 1 s each")
    if fmt.encoding != "opus" and len(data) % fmt.bytes_per_frame:
        raise ProtocolError(AUDIO_PROCESSING_FAILED, f"audio of {len(data)} bytes is not a whole number of "
                                                     f"{fmt.channels}-channel {fmt.encoding} samples")
    return data


def _too_large(size: int) -> ProtocolError:
    return ProtocolError(MESSAGE_TOO_LARGE, f"a message of {size} bytes is over the {MAX_MESSAGE_BYTES} byte limit")


# -- server messages -------------------------------------------------------------------------


def frame_json(frame: FrameOut, session_id: str, turn_id: str, sequence: int, sent_ms: int, fmt: str) -> str:
    """Seed 002's `response_video` for a frame, plus exact timing fields (see docs/protocol.md)."""
    return json.dumps({
        "type": "response_video",
        "sessionId": session_id,
        "turnId": turn_id,
        "frameData": base64.b64encode(frame.data).decode("ascii"),
        "sequenceNumber": sequence,
        "timestamp": sent_ms,
        "audioTimestamp": _ms(frame.pts),
        "format": fmt,
        "isKeyframe": frame.keyframe,
        "frameIndex": frame.index,
        "pts": frame.pts,
        "durationMs": _ms(frame.span),
        "idle": frame.idle,
    }, separators=(",", ":"))


def frame_binary(frame: FrameOut, sequence: int, fmt: str) -> bytes:
    flags = (FLAG_KEYFRAME if frame.keyframe else 0) | (FLAG_IDLE if frame.idle else 0)
    header = FRAME_OUT.pack(KIND_FRAME_OUT, FORMAT_CODES[fmt], flags, 0, sequence & 0xFFFFFFFF,
                            frame.index & 0xFFFFFFFF, frame.pts, frame.span)
    return header + frame.data


def audio_json(audio: AudioOut, session_id: str) -> str:
    return json.dumps({
        "type": "response_audio", "sessionId": session_id, "audioTimestamp": _ms(audio.pts), "pts": audio.pts,
        "sampleRate": audio.sample_rate, "channels": audio.channels, "format": "pcm",
        "data": base64.b64encode(audio.pcm16).decode("ascii"),
    }, separators=(",", ":"))


def audio_binary(audio: AudioOut) -> bytes:
    return AUDIO_OUT.pack(KIND_AUDIO_OUT, 1, audio.channels, audio.sample_rate, audio.pts) + audio.pcm16


def status_json(event: str, session_id: str | None, **detail) -> str:
    return json.dumps({"type": "status", "event": event, "sessionId": session_id, **detail}, separators=(",", ":"))


def pong_json(ident: str | int | None) -> str:
    return json.dumps({"type": "pong", "id": ident}, separators=(",", ":"))


def error_json(code: str, message: str, fatal: bool, session_id: str | None) -> str:
    return json.dumps({"type": "error", "code": code, "message": message, "fatal": fatal, "sessionId": session_id},
                      separators=(",", ":"))


def _ms(samples: int) -> float | int:
    """Milliseconds of the 16 kHz clock: an int when exact (always at 25 fps), else a float."""
    ms = samples * 1000 / SAMPLE_RATE
    return int(ms) if ms.is_integer() else ms
