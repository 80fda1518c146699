"""The networks: a U-Net from (masked crop, reference, lip sketch, mask) to the crop (torch).

Five levels; each is conv3x3-BatchNorm-ReLU twice, a stride-2 conv going down, nearest
upsampling and a conv going up, skip connections by concatenation, a 1x1 conv at the end.
BatchNorm folds into the convolutions on export and ReLU fuses with them, so the ONNX graph
is plain Conv/Relu/Resize/Concat: fast on CPU and friendly to INT8 quantisation.

Two heads (`NetConfig.head`):

- `rgb`: the crop drawn outright (sigmoid). L1 training averages whatever the lip shape does
  not determine, so beard, skin pores and teeth come out soft.
- `warp`: the network draws three things: a colour (sigmoid), a flow (tanh, at most
  MAX_FLOW of the crop side) that moves the REFERENCE crop's own pixels, and a mask (sigmoid)
  saying where to take the moved reference and where the colour. The crop is
  mask * reference(flow) + (1 - mask) * colour. Real texture is moved, not invented, and at
  render time the flow moves the full-resolution reference FRAME (conditioning.py), so the
  texture is as sharp as the footage whatever the crop size. `parts(x)` gives the three
  (what the ONNX file outputs: PARTS_CHANNELS), `forward(x)` the crop they make.

Configurations (`CONFIGS`): `full` works on a 256 x 256 crop of the lower face, `lite` on a
128 x 128 one with an eighth of the widths' cost, for real time on a laptop CPU; `tiny` (64 px)
exists for tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lipstream.neural.layout import IN_CHANNELS, MAX_FLOW, OUT_CHANNELS, PARTS_CHANNELS, REFERENCE


@dataclass(frozen=True)
class NetConfig:
    """A network configuration: crop size in pixels, channel widths per level (5 levels) and
    the head (`rgb` or `warp`, module docstring)."""

    name: str
    size: int
    widths: tuple[int, ...]
    head: str = "rgb"

    def to_dict(self) -> dict:
        return {**asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: dict) -> "NetConfig":
        return cls(str(data["name"]), int(data["size"]), tuple(int(w) for w in data["widths"]),
                   str(data.get("head", "rgb")))


HEADS = ("rgb", "warp")
CONFIGS = {
    "full": NetConfig("full", 256, (32, 64, 96, 128, 128), "warp"),
    "lite": NetConfig("lite", 128, (8, 16, 32, 48, 64), "warp"),
    "tiny": NetConfig("tiny", 64, (8, 8, 16, 16, 16), "warp"),  # for tests and smoke runs only
}


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Input (B, IN_CHANNELS, S, S) float in [0, 1] -> (B, 3, S, S) in [0, 1]; S divisible by 16."""

    def __init__(self, config: NetConfig):
        super().__init__()
        self.config = config
        w = config.widths
        self.stem = nn.Sequential(_conv(IN_CHANNELS, w[0]), _conv(w[0], w[0]))
        self.down = nn.ModuleList(nn.Sequential(_conv(w[i], w[i + 1], 2), _conv(w[i + 1], w[i + 1]))
                                  for i in range(len(w) - 1))
        self.up = nn.ModuleList(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(w[i + 1], w[i]))
                                for i in range(len(w) - 1))
        self.merge = nn.ModuleList(nn.Sequential(_conv(2 * w[i], w[i]), _conv(w[i], w[i])) for i in range(len(w) - 1))
        if config.head not in HEADS:
            raise ValueError(f"unknown head {config.head!r}; one of {HEADS}")
        self.warps = config.head == "warp"
        self.head = nn.Conv2d(w[0], PARTS_CHANNELS if self.warps else OUT_CHANNELS, 1)
        if self.warps:  # start from "no flow, half reference": training moves on from there
            nn.init.zeros_(self.head.weight[3:])
            nn.init.zeros_(self.head.bias[3:])
            # grid_sample's coordinates of the crop's own pixel centres (align_corners=False)
            centres = (2 * torch.arange(config.size, dtype=torch.float32) + 1) / config.size - 1
            gy, gx = torch.meshgrid(centres, centres, indexing="ij")
            self.register_buffer("grid", torch.stack([gx, gy], -1)[None], persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for i in reversed(range(len(self.up))):
            y = self.merge[i](torch.cat([self.up[i](y), skips.pop()], dim=1))
        return self.head(y)

    def parts(self, x: torch.Tensor) -> torch.Tensor:
        """What the network outputs (and the ONNX file): rgb head (B, 3, S, S) in [0, 1]; warp
        head (B, PARTS_CHANNELS, S, S), all in [0, 1] so that one INT8 scale serves them: colour
        (3), flow (2: dx, dy; 0..1 for -MAX_FLOW..MAX_FLOW of the crop side, flow_pixels()), mask
        (1: 1 = the moved reference)."""
        y = self.features(x)
        if not self.warps:
            return torch.sigmoid(y)
        return torch.sigmoid(torch.cat([y[:, :3], 2 * y[:, 3:5], y[:, 5:6]], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The crop (B, 3, S, S) in [0, 1]."""
        parts = self.parts(x)
        return parts if not self.warps else compose_parts(parts, x[:, REFERENCE], self.grid)


def compose_parts(parts: torch.Tensor, reference: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The warp head's crop from its parts (B, 6, S, S) (UNet.parts) and the reference crop (B, 3, S, S),
    grid (1, S, S, 2) the crop's own pixel centres in grid_sample coordinates."""
    return mix_parts(parts, move_reference(parts, reference, grid))


def move_reference(parts: torch.Tensor, reference: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The reference crop (B, 3, S, S) moved by the parts' flow (compose_parts' arguments), float32."""
    offset = (parts[:, 3:5].permute(0, 2, 3, 1).float() * 2 - 1) * (2 * MAX_FLOW)  # grid units span 2
    return F.grid_sample(reference.float(), grid + offset, mode="bilinear", padding_mode="border",
                         align_corners=False)


def mix_parts(parts: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """The mask's mix (B, 3, S, S) of the moved reference and the parts' colour."""
    mask = parts[:, 5:6].float()
    return mask * moved + (1 - mask) * parts[:, :3].float()


class PartsView(nn.Module):
    """The network with `parts` as its forward: what export and the GPU runner run."""

    def __init__(self, model: UNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.parts(x)


def build_model(config: NetConfig | str) -> UNet:
    return UNet(CONFIGS[config] if isinstance(config, str) else config)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def state_to_numpy(model: nn.Module, dtype=None) -> dict:
    """The model's state (parameters and BatchNorm statistics) as numpy arrays, keyed by name."""
    out = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy()
    return out


def load_numpy_state(model: nn.Module, state: dict) -> nn.Module:
    """Load numpy arrays (from `state_to_numpy`, any float dtype) into the model, as float32."""
    current = model.state_dict()
    tensors = {}
    for key, value in current.items():
        if key not in state:
            raise KeyError(f"weights lack {key}")
        tensors[key] = torch.as_tensor(state[key]).to(value.dtype).reshape(value.shape)
    model.load_state_dict(tensors)
    return model
