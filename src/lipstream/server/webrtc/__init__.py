"""WebRTC for `lipstream serve` (POST /webrtc/offer; needs aiortc: `pip install 'lipstream[webrtc]'`):
the peer and its session (peer), the shared output timeline (playout), the tracks (tracks) and
adaptive quality from the receiver's bandwidth estimate (quality)."""
