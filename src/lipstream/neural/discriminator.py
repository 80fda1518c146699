"""A patch discriminator for adversarial training of the renderer (torch; training only).

L1 training averages what the lip sketch does not determine: teeth come out as one white band,
lip edges soft. A discriminator trained beside the network, from scratch on the avatar's own
frames, scores each patch of a crop as real footage or drawing; the network is then also asked
to draw patches it cannot tell from real ones (pix2pix's PatchGAN with the hinge loss). It sees
the crop only where the renderer pastes it (the rest is the real crop), its fine band amplified
(a drawing differs from the footage by a few grey levels, mostly there), and the lip sketch and
hidden mask beside it, so a real-looking mouth of another shape does not pass. No spectral
norm: it bounds the scores' change to the size of the input's, and with drawings this close to
the footage such a discriminator learnt nothing in 1050 steps (hinge loss 2.00, all 9 clips).

Layout: input (B, IN_CHANNELS, S, S) float (train.discriminator_input: crop RGB in [-1, 1], its
fine band x FINE_GAIN, the lip sketch's two channels and the hidden mask in [0, 1]); output
(B, 1, S / 2^d, S / 2^d) scores, d = `downs(S)`, each from a patch of about 70 crop pixels at
S = 256 (34 at 128).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

IN_CHANNELS = 9
FINE_GAIN = 8.0  # the fine band's few grey levels brought to the colour channels' scale


def downs(size: int) -> int:
    """Stride-2 levels for a crop of `size` pixels: the patch grows with the crop (3 at 256 px)."""
    return max(int(math.log2(size / 32)), 1)


class PatchDiscriminator(nn.Module):
    """(B, IN_CHANNELS, S, S) -> (B, 1, S / 2^downs(S), S / 2^downs(S)) real-versus-drawn scores."""

    def __init__(self, size: int, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        cin = IN_CHANNELS
        for i in range(downs(size)):
            cout = width * 2**i
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        layers += [nn.Conv2d(cin, cin, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                   nn.Conv2d(cin, 1, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def patch_weights(hidden: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """How much of each score's patch is hidden (pasted by the renderer): hidden (1, 1, S, S) in
    [0, 1] averaged down to the scores' grid (1, 1, s, s), normalised to mean 1 over the grid."""
    weights = F.adaptive_avg_pool2d(hidden, scores.shape[-2:])
    return weights / weights.mean().clamp_min(1e-6)


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator's scores on real and drawn crops (B, 1, s, s), patches
    weighted by `weights` (1, 1, s, s)."""
    return ((F.relu(1 - real) + F.relu(1 + fake)) * weights).mean()


def generator_loss(fake: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The network's adversarial loss: minus the weighted mean score of its drawn crops."""
    return -(fake * weights).mean()
