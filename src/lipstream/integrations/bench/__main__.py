"""Measure the voice-agent plugins against issue 12's bars and write the figures with the machine.

    python -m lipstream.integrations.bench -o bench/results/integrations.json [--avatar default] [--replies 20]

Needs both extras (pip install 'lipstream[livekit,pipecat]'). Every run is real time (LiveKit's
runner and Pipecat's transports pace themselves): about two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from lipstream.bench.machine import machine_info
from lipstream.integrations.bench import TTS_RATE_HZ, chunks, small_avatar, sync_offset_ms, tts_speech
from lipstream.integrations.replies import ReplyEnd, ReplyStream

TTFF_REPLY_S = 1.0
TTFF_PAUSE_S = 0.5
LONG_REPLY_S = 8.0


async def time_to_first_frame(avatar, replies: int, streamed: bool) -> dict:
    """Time from a reply's first audio in to its first frame out, over `replies` replies of
    TTFF_REPLY_S with the default options; the audio comes in 20 ms chunks at playing speed
    (`streamed`, a streaming TTS) or all at once."""
    stream = ReplyStream(avatar)
    ttff: list[float] = []

    async def consume():
        async for item in stream:
            if isinstance(item, ReplyEnd):
                ttff.append(item.stats.time_to_first_frame_s)

    consumer = asyncio.create_task(consume())
    speech = tts_speech(TTFF_REPLY_S)
    for n in range(replies):
        await asyncio.sleep(TTFF_PAUSE_S)
        start = time.monotonic()
        for k, chunk in enumerate(chunks(speech)):
            stream.push(chunk, TTS_RATE_HZ)
            if streamed:  # chunk k+1 at (k+1) x 20 ms from the first: summed sleeps would come ever later
                await asyncio.sleep(max(0.0, start + (k + 1) * len(chunk) / TTS_RATE_HZ - time.monotonic()))
        stream.end_reply()
        while len(ttff) < n + 1:
            await asyncio.sleep(0.02)
    stream.close()
    await consumer
    ms = np.array(ttff) * 1000
    lookahead_ms = stream.lookahead_s * 1000
    return {"replies": replies, "audio": "20 ms chunks at playing speed" if streamed else "whole reply at once",
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "max_ms": round(float(ms.max()), 1), "lookahead_ms": round(lookahead_ms, 1),
            "bar_ms": round(lookahead_ms + 60, 1), "renderer": stream.session.renderer,
            "driver": stream.session.driver_name, "size": list(stream.size),
            "fallbacks": [c.reason for c in stream.session.chain.changes]}


async def livekit_figures(avatar, folder: Path) -> dict:
    from lipstream.integrations.bench.livekit_runs import run_reply

    whole = await run_reply(avatar, 3.0)
    _, position, interrupted = whole.finished
    offset = sync_offset_ms(folder / "livekit.mp4", whole.played.video, whole.played.audio, TTS_RATE_HZ, 25)
    long = await run_reply(avatar, LONG_REPLY_S)
    long_offset = sync_offset_ms(folder / "livekit-long.mp4", long.played.video, long.played.audio, TTS_RATE_HZ, 25)
    cut = await run_reply(avatar, 3.0, clear_at_s=0.8)
    _, cut_position, cut_interrupted = cut.finished
    return {"avatar": str(avatar), "renderers": whole.renderers + long.renderers + cut.renderers, "reply_s": 3.0,
            "reply_video_frames": whole.reply_video_frames,
            "playback_finished_s": round(position, 3), "interrupted": interrupted,
            "audio_identical": bool(np.array_equal(np.concatenate(whole.played.sent_audio), whole.speech)),
            "idle_fps_before": whole.idle_fps_before, "idle_fps_after": whole.idle_fps_after,
            "sync_offset_ms": round(offset, 1), "frame_offset_ms": _spread(whole.frame_offsets_ms()),
            "long_reply_s": LONG_REPLY_S, "long_sync_offset_ms": round(long_offset, 1),
            "long_frame_offset_ms": _spread(long.frame_offsets_ms()),
            "clear_at_s": 0.8, "cleared_position_s": round(cut_position, 3), "cleared_interrupted": cut_interrupted}


def _spread(ms: np.ndarray) -> dict:
    """Median and 5th / 95th percentiles (ms) of per-frame offsets, and how many frames."""
    if not len(ms):
        return {"frames": 0}
    return {"frames": len(ms), "p50": round(float(np.median(ms)), 1), "p5": round(float(np.percentile(ms, 5)), 1),
            "p95": round(float(np.percentile(ms, 95)), 1)}


async def pipecat_figures(avatar, folder: Path) -> dict:
    from pipecat.frames.frames import InterruptionFrame, TTSAudioRawFrame, TTSStoppedFrame
    from pipecat.tests.utils import SleepFrame

    from lipstream.integrations.bench.pipecat_runs import run_service, speech_images, speech_span_s, talk, tts_reply
    from lipstream.integrations.pipecat import LipstreamVideoService

    service = LipstreamVideoService(avatar)
    down = await run_service(service, tts_reply(3.0))
    kinds = [type(f) for f in down]
    last_audio = max(i for i, k in enumerate(kinds) if k is TTSAudioRawFrame)
    cut = await run_service(LipstreamVideoService(avatar), [*tts_reply(3.0)[:-1], SleepFrame(0.3), InterruptionFrame()])
    client, started = await talk(avatar, 6.0)
    audio, rate = client.timed_audio()
    heard = speech_span_s(np.concatenate([s for _, s in audio]), rate)
    return {"avatar": str(avatar), "renderer": service.stream.session.renderer, "reply_s": 3.0,
            "images": len(speech_images(down)),
            "audio_s": sum(f.num_frames for f in down if isinstance(f, TTSAudioRawFrame)) / TTS_RATE_HZ,
            "stop_after_last_audio": kinds.index(TTSStoppedFrame) > last_audio,
            "interrupted_at_s": 0.3, "audio_out_after_interruption_s":
                sum(f.num_frames for f in cut if isinstance(f, TTSAudioRawFrame)) / TTS_RATE_HZ,
            "interruption_passed_on": any(isinstance(f, InterruptionFrame) for f in cut),
            "webrtc_reply_s": 6.0, "webrtc_speech_heard_s": round(heard, 3),
            "webrtc_speech_sent_s": round(speech_span_s(tts_speech(6.0), TTS_RATE_HZ), 3),
            "webrtc_video_fps_while_talking":
                sum(started <= t <= started + 6.0 for t, _ in client.video) / 6.0,
            "webrtc_sync_offset_ms": round(sync_offset_ms(folder / "webrtc.mp4", client.video, audio, rate, 25), 1)}


async def measure(avatar: str, replies: int) -> dict:
    """Time to first frame on `avatar` with the default options; the plugins' scenarios on the
    bundled portrait at 256 x 256 (on a 512 px avatar a loaded 2-core machine can't keep 25 fps,
    and the session falls back to the static renderer, whose still mouth can't be timed)."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        small = small_avatar(Path(folder))
        figures = {
            "time_to_first_frame": {
                "streamed": await time_to_first_frame(avatar, replies, streamed=True),
                "burst": await time_to_first_frame(avatar, replies, streamed=False),
            },
            "livekit": await livekit_figures(small, Path(folder)),
            "pipecat": await pipecat_figures(small, Path(folder)),
        }
    return {"machine": machine_info(), "avatar": avatar, "load_average_before": load_before,
            "load_average_after": os.getloadavg(), **figures}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m lipstream.integrations.bench", description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("bench/results/integrations.json"))
    parser.add_argument("--avatar", default="default", help="avatar to render (default: the bundled portrait)")
    parser.add_argument("--replies", type=int, default=20, help="replies timed for time to first frame")
    args = parser.parse_args()
    start = time.perf_counter()
    results = asyncio.run(measure(args.avatar, args.replies))
    results["seconds"] = round(time.perf_counter() - start, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
