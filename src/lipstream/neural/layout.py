"""The network's input: channels, their order and scaling (numpy or torch arrays alike).

Input (B, IN_CHANNELS, S, S) float32 in [0, 1], channel order:

    0-2  the frame's crop, RGB, zeroed where the hidden mask is on (mouth, lips, jaw, chin)
    3-5  the reference crop, RGB (one training frame of the avatar, for identity: teeth, lips)
    6    the lip sketch's lines (lip contours and jaw line)
    7    the lip sketch's inside of the mouth opening
    8    the hidden mask (1 = hidden)

Output (B, 3, S, S) float32 in [0, 1]: the crop's RGB; only its hidden region is used. A
network with the warp head outputs PARTS_CHANNELS instead (model.py): colour, flow, mask.
Images come in as uint8 and are divided by 255 here, so training and rendering scale alike.
"""

from __future__ import annotations

IN_CHANNELS = 9
OUT_CHANNELS = 3
PARTS_CHANNELS = 6  # warp head: colour (3), flow (2), mask (1), all in [0, 1] (one INT8 scale fits all)
MAX_FLOW = 0.25  # the warp head's largest displacement, share of the crop side (flow 0..1 -> -MAX..MAX)
REFERENCE = slice(3, 6)  # the reference crop's channels in the input
SHAPE = slice(6, 9)  # the lip sketch's two channels and the hidden mask: the shape asked for
HIDE_THRESHOLD = 0.5  # a pixel is zeroed in the input where the soft hidden mask exceeds this


def network_input(crop, reference, sketch, hidden, cat):
    """Assemble the input from uint8-valued arrays (as float): crop (..., 3, S, S), reference
    (..., 3, S, S), sketch (..., 2, S, S), hidden (..., 1, S, S), all 0-255; `cat(list, axis)`
    concatenates (np.concatenate or torch.cat). Returns (..., IN_CHANNELS, S, S) in [0, 1]."""
    hide = (hidden > HIDE_THRESHOLD * 255) * 1.0
    masked = crop * (1.0 - hide)
    return cat([masked / 255.0, reference / 255.0, sketch / 255.0, hide], -3)
