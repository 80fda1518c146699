"""A LiveKit voice agent with a lipstream avatar, rendered in the agent's own process.

No avatar service, no API key for it: the avatar is drawn on this machine's CPU and published
as the agent's own video and audio tracks. Bring your own LiveKit server and STT/LLM/TTS keys:

    pip install 'lipstream[livekit]' livekit-plugins-deepgram livekit-plugins-openai livekit-plugins-silero
    export LIVEKIT_URL=wss://... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=...
    export DEEPGRAM_API_KEY=... OPENAI_API_KEY=...
    export LIPSTREAM_AVATAR=me.jpg            # optional: a photo or video of one face, or a package
    python examples/livekit_agent.py dev      # then join the room, e.g. from agents-playground.livekit.io
"""

import os

from livekit.agents import Agent, AgentSession, JobContext, WorkerOptions, cli
from livekit.plugins import deepgram, openai, silero

from lipstream.integrations.livekit import AvatarSession


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    session = AgentSession(
        stt=deepgram.STT(),
        llm=openai.LLM(model="gpt-4o-mini"),
        tts=openai.TTS(),
        vad=silero.VAD.load(),
    )
    avatar = AvatarSession(os.environ.get("LIPSTREAM_AVATAR", "default"))  # loads (prepares) the avatar now
    await avatar.start(session, room=ctx.room)  # the avatar becomes the agent's audio output
    await session.start(agent=Agent(instructions="You are a friendly assistant. Keep answers short."),
                        room=ctx.room)
    await session.generate_reply(instructions="Greet the user and offer your help.")


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint))
