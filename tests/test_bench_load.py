"""The load bench's paced sender: every sample sent once, in order, in chunks of the given length
with consecutive sequence numbers, from one start."""

from __future__ import annotations

import asyncio

import numpy as np

from lipstream.bench.load import _audio_message, send_paced


class RecordingSocket:
    def __init__(self):
        self.messages = []

    async def send(self, message):
        self.messages.append(message)


def test_send_paced_sends_every_sample_once_in_numbered_chunks():
    pcm = np.arange(1000, dtype="<i2")  # 62.5 ms at 16 kHz, in 1 ms chunks of 16 samples
    ws = RecordingSocket()
    sent = asyncio.run(send_paced(ws, pcm, 0.001, lambda n, chunk: (n, chunk.copy()), first_sequence=7))
    assert [n for n, _ in ws.messages] == list(range(7, 7 + 63))
    assert all(len(chunk) == 16 for _, chunk in ws.messages[:-1]) and len(ws.messages[-1][1]) == 1000 - 62 * 16
    assert np.array_equal(np.concatenate([chunk for _, chunk in ws.messages]), pcm)
    assert len(sent) == 63 and sent == sorted(sent)


def test_send_paced_builds_the_protocol_message_per_chunk():
    pcm = np.zeros(640, "<i2")
    ws = RecordingSocket()
    asyncio.run(send_paced(ws, pcm, 0.02, _audio_message, once_recorded=True))
    assert ws.messages == [_audio_message(0, pcm[:320]), _audio_message(1, pcm[320:])]
