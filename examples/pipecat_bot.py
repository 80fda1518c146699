"""A Pipecat voice bot with a lipstream avatar, talking to a browser over SmallWebRTC.

The avatar is drawn on this machine's CPU, right after the TTS in the pipeline. Bring your own
STT/LLM/TTS keys; the page comes with Pipecat's development runner:

    pip install 'lipstream[pipecat]' 'pipecat-ai[runner,deepgram,openai,silero]'
    export DEEPGRAM_API_KEY=... OPENAI_API_KEY=...
    export LIPSTREAM_AVATAR=me.jpg            # optional: a photo or video of one face, or a package
    python examples/pipecat_bot.py -t webrtc  # then open http://localhost:7860 and press Connect
"""

import os

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.runner.types import RunnerArguments
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

from lipstream.integrations.pipecat import LipstreamVideoService

# Loaded (prepared on first use) once, when the bot starts, not when someone connects.
avatar = LipstreamVideoService(os.environ.get("LIPSTREAM_AVATAR", "default"))


async def bot(runner_args: RunnerArguments) -> None:
    width, height = avatar.size
    transport = SmallWebRTCTransport(
        webrtc_connection=runner_args.webrtc_connection,
        params=TransportParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            video_out_enabled=True,
            video_out_is_live=False,  # the avatar's images come with their audio (sync_with_audio)
            video_out_width=width,
            video_out_height=height,
            video_out_framerate=round(avatar.fps),
        ),
    )
    context = LLMContext([{"role": "system", "content": "You are a friendly assistant. Keep answers short."}])
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline([
        transport.input(),
        DeepgramSTTService(api_key=os.environ["DEEPGRAM_API_KEY"]),
        aggregators.user(),
        OpenAILLMService(api_key=os.environ["OPENAI_API_KEY"], model="gpt-4o-mini"),
        OpenAITTSService(api_key=os.environ["OPENAI_API_KEY"]),
        avatar,
        transport.output(),
        aggregators.assistant(),
    ])
    worker = PipelineWorker(pipeline, params=PipelineParams(enable_metrics=True))
    runner = WorkerRunner(handle_sigint=runner_args.handle_sigint)
    await runner.add_workers(worker)
    await runner.run()


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
