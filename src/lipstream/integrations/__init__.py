"""Voice-agent plugins: lipstream as the avatar of a LiveKit Agents or Pipecat agent, in-process.

    from lipstream.integrations.livekit import AvatarSession          # pip install 'lipstream[livekit]'
    from lipstream.integrations.pipecat import LipstreamVideoService  # pip install 'lipstream[pipecat]'

Both are thin shells over one live session (lipstream.session.Session) driven reply by reply
from asyncio (`replies.ReplyStream`); the frameworks are imported only by their own module.
"""
