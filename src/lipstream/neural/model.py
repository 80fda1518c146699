"""The networks: a U-Net from (masked crop, reference, lip sketch, mask) to the crop (torch).

Five levels; each is conv3x3-BatchNorm-ReLU twice, a stride-2 conv going down, nearest
upsampling and a conv going up, skip connections by concatenation, a 1x1 conv and a sigmoid
at the end. BatchNorm folds into the convolutions on export and ReLU fuses with them, so the
ONNX graph is plain Conv/Relu/Resize/Concat: fast on CPU and friendly to INT8 quantisation.

Configurations (`CONFIGS`): `full` works on a 256 x 256 crop of the lower face, `lite` on a
128 x 128 one with an eighth of the widths' cost, for real time on a laptop CPU; `tiny` (64 px)
exists for tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from lipstream.neural.layout import IN_CHANNELS, OUT_CHANNELS


@dataclass(frozen=True)
class NetConfig:
    """A network configuration: crop size in pixels and channel widths per level (5 levels)."""

    name: str
    size: int
    widths: tuple[int, ...]

    def to_dict(self) -> dict:
        return {**asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: dict) -> "NetConfig":
        return cls(str(data["name"]), int(data["size"]), tuple(int(w) for w in data["widths"]))


CONFIGS = {
    "full": NetConfig("full", 256, (32, 64, 96, 128, 128)),
    "lite": NetConfig("lite", 128, (8, 16, 32, 48, 64)),
    "tiny": NetConfig("tiny", 64, (8, 8, 16, 16, 16)),  # for tests and smoke runs only
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
        self.head = nn.Conv2d(w[0], OUT_CHANNELS, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for i in reversed(range(len(self.up))):
            y = self.merge[i](torch.cat([self.up[i](y), skips.pop()], dim=1))
        return torch.sigmoid(self.head(y))


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
