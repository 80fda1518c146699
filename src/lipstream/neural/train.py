"""Training a neural renderer on one avatar's dataset (dataset.py), on a GPU or the CPU.

Self-supervised: every training frame is its own target. The input is that frame's crop with
the hidden region zeroed, its lip sketch (lip model fitted and redrawn), the hidden mask and
the reference crop; the loss is L1 over the crop, HIDDEN_WEIGHT times heavier inside the
hidden region. Optionally (`texture_weight`, warp head) the same L1 also on the TEXTURED
crop, the drawing plus the moved reference's fine texture as geometry.Texture adds it at
render time (textured_crop), so the flow and mask learn where moving the reference puts its
lip lines and creases in the wrong place (ghosts). Optionally (`adversarial_weight`) a patch
discriminator (discriminator.py) is trained beside it from `adversarial_start` of the steps on,
and the network is also asked to draw crops it cannot tell from real ones. Augmentation moves crop and sketch together by a small random similarity
(alignment jitter between frames) and scales colours. AdamW with a one-cycle schedule; bf16
autocast and channels-last on CUDA, float32 on the CPU.

Held out: the last fifth of the frames by time (dataset.heldout_start); measured every
`eval_every` steps and at the end as PSNR over the hidden region, next to the PSNR of copying
the reference crop there. Nothing is chosen by the held-out figures: the last step is the model.

Resumable: a checkpoint (model, optimiser, schedule, step, random state) is written every
`checkpoint_every` steps to `out_dir/checkpoint.pt`; running again with the same out_dir and
configuration continues from it. The result is `out_dir/weights.npz` (model.state_to_numpy)
and `out_dir/train.json`.

Runs as a module on a machine with torch and numpy only:
    python -m lipstream.neural.train DATASET.npz --arch full --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lipstream.errors import NotSupportedError
from lipstream.neural.dataset import load_dataset
from lipstream.neural.discriminator import (FINE_GAIN, PatchDiscriminator, discriminator_loss, generator_loss,
                                            patch_weights)
from lipstream.neural.layout import HIDE_THRESHOLD, REFERENCE, SHAPE, network_input
from lipstream.neural.model import CONFIGS, build_model, mix_parts, move_reference, parameter_count, state_to_numpy
from lipstream.neural.references import training_references

HIDDEN_WEIGHT = 4.0
DISCRIMINATOR_LR = 2e-4  # Adam, betas (0.5, 0.999): pix2pix's
SHIFT_SHARE = 0.03  # random translation, share of the crop side
SCALE_JITTER = 0.03
ROTATE_DEG = 2.0
GAIN_JITTER = 0.06
BAND_SIGMAS = (1.0, 2.0)  # crop pixels: the fine bands of the band loss (geometry.Texture's, at crop scale)
AMPLITUDE_SIGMA = 4.0  # crop pixels: the neighbourhood over which "amplitude" compares a band's strength
BAND_MODES = ("aligned", "amplitude")
TEXTURE_SIGMA = 2.0  # crop pixels at 256 px (geometry.Texture's sigma), scaled with the crop side
CHECKPOINT = "checkpoint.pt"
# The patch discriminator's weight where TrainConfig leaves it unset, by arch: on full it keeps the
# held-out figures (9 eval clips, textured: PSNR -0.3 to +0.3 dB, the same bars met) and draws
# teeth apart instead of one white band (docs/neural.md); on the others it was not tried.
ADVERSARIAL_WEIGHTS = {"full": 0.02}

Progress = Callable[[int, int, dict], None]


@dataclass
class TrainConfig:
    """What to train and how; `steps` x `batch` crops are seen in all."""

    arch: str = "full"
    head: str = ""  # "" = the arch's own (model.CONFIGS); "rgb" or "warp" to override it
    steps: int = 2000
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu
    eval_every: int = 500
    checkpoint_every: int = 500
    augment: bool = True
    band_weight: float = 0.0  # weight of the loss on the fine bands (band_loss); 0 = plain L1
    band_mode: str = "aligned"  # band_loss's mode: "aligned" or "amplitude"
    texture_weight: float = 0.0  # weight of the L1 on the textured crop (textured_crop); 0 = off
    texture_gain: float = 1.0  # the weight of the moved reference's fine texture added there
    adversarial_weight: float | None = None  # the patch discriminator's loss weight (discriminator.py);
    # 0 = off, None = the arch's (ADVERSARIAL_WEIGHTS, else 0)
    adversarial_start: float = 0.25  # share of the steps trained with L1 alone before it is on

    def __post_init__(self):
        if self.adversarial_weight is None:
            self.adversarial_weight = ADVERSARIAL_WEIGHTS.get(self.arch, 0.0)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (reflect padding) of (B, C, S, S) float images, sigma in pixels."""
    radius = max(int(math.ceil(3 * sigma)), 1)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def band_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, mode: str = "aligned",
              sigmas: tuple[float, ...] = BAND_SIGMAS) -> torch.Tensor:
    """Weighted L1 on the fine bands (differences of Gaussians at `sigmas`, crop pixels) of
    prediction and target, (B, 3, S, S) in [0, 1], summed over the bands. Plain L1 lets the
    network draw these bands weak (their average over plausible mouths is near zero).
    `aligned`: the bands themselves are compared (texture at the right place); `amplitude`:
    their local strength (|band| blurred over AMPLITUDE_SIGMA), so texture as strong as the
    footage's is asked for wherever it is not known exactly where its edges lie."""
    if mode not in BAND_MODES:
        raise ValueError(f"unknown band mode {mode!r}; one of {BAND_MODES}")
    loss = pred.new_zeros(())
    for sigma in sigmas:
        low_p, low_t = _gaussian_blur(pred, sigma), _gaussian_blur(target, sigma)
        band_p, band_t = pred - low_p, target - low_t
        if mode == "amplitude":
            band_p, band_t = _gaussian_blur(band_p.abs(), AMPLITUDE_SIGMA), _gaussian_blur(band_t.abs(), AMPLITUDE_SIGMA)
        loss = loss + ((band_p - band_t).abs() * weight).mean()
        pred, target = low_p, low_t
    return loss


def textured_crop(drawing: torch.Tensor, moved: torch.Tensor, sigma: float, gain: float) -> torch.Tensor:
    """The drawing (B, 3, S, S) plus `gain` times the moved reference's (B, 3, S, S) texture
    finer than a Gaussian of `sigma` (crop pixels): geometry.Texture's result at crop scale,
    with a fixed weight instead of the solved one."""
    return drawing + gain * (moved - _gaussian_blur(moved, sigma))


def discriminator_input(crop: torch.Tensor, shape: torch.Tensor, sigma: float) -> torch.Tensor:
    """What the patch discriminator sees (discriminator.py): the crop (B, 3, S, S) in [0, 1] as
    [-1, 1], its band finer than a Gaussian of `sigma` crop pixels x FINE_GAIN, and the input's
    lip sketch and hidden mask (B, 3, S, S) (layout.SHAPE)."""
    return torch.cat([crop * 2 - 1, (crop - _gaussian_blur(crop, sigma)) * FINE_GAIN, shape], 1)


def psnr_hidden(pred: torch.Tensor, target: torch.Tensor, hide: torch.Tensor) -> torch.Tensor:
    """PSNR (B,) in dB over the hidden pixels; images (B, 3, S, S) in [0, 1], hide (1, 1, S, S) 0/1."""
    se = ((pred.float() - target.float()) ** 2 * hide).sum(dim=(1, 2, 3))
    mse = se / (hide.sum() * pred.shape[1])
    return -10 * torch.log10(mse.clamp_min(1e-10))


class Trainer:
    """Holds the data on the device and runs steps; see the module docstring."""

    def __init__(self, dataset, config: TrainConfig, out_dir: str | Path | None = None):
        self.config = config
        self.device = pick_device(config.device)
        self.net_config = CONFIGS[config.arch]
        if config.head:
            self.net_config = replace(self.net_config, head=config.head)
        size = self.net_config.size
        data = load_dataset(dataset, size)
        self.meta = data["meta"]
        self.split = int(self.meta["heldout_start"])
        dev = self.device
        self.crops = torch.from_numpy(np.ascontiguousarray(data["crops"].transpose(0, 3, 1, 2))).to(dev)
        self.sketch = torch.from_numpy(np.ascontiguousarray(data["sketch"])).to(dev)
        hidden = torch.from_numpy(np.asarray(data["hidden"], np.float32)).to(dev)[None, None]
        self.hidden = hidden
        self.hide = (hidden > HIDE_THRESHOLD * 255).float()
        self.weight = 1.0 + HIDDEN_WEIGHT * hidden / 255.0
        self.reference = self.crops[int(self.meta["reference"])][None].float()
        self.references = None  # warp head: per frame, the training frames it may move (references.py)
        if config.texture_weight and self.net_config.head != "warp":
            raise NotSupportedError("texture_weight needs the warp head (it adds the moved reference's texture)")
        if self.net_config.head == "warp":
            table = training_references(np.asarray(data["params"]), self.split)
            self.references = torch.from_numpy(table).to(dev)
        torch.manual_seed(config.seed)
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        self.model = build_model(self.net_config).to(dev)
        self.cuda = dev.type == "cuda"
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=config.lr,
                                                            total_steps=max(config.steps, 2), pct_start=0.15)
        self.discriminator = None
        if config.adversarial_weight:
            self.discriminator = PatchDiscriminator(size).to(dev)
            self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=DISCRIMINATOR_LR, betas=(0.5, 0.999))
        self.step = 0
        self.history: list[dict] = []
        self.out_dir = Path(out_dir) if out_dir else None
        self.train_seconds = 0.0
        if self.out_dir and (self.out_dir / CHECKPOINT).exists():
            self._resume()

    # -- data -------------------------------------------------------------------------------

    def inputs(self, idx: torch.Tensor, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(network input, target) for frame indices idx, float32 on the device."""
        crops = self.crops[idx].float()
        sketch = self.sketch[idx].float()
        if self.references is None:
            reference = self.reference.expand(len(idx), -1, -1, -1)
        else:  # training: one of the nearest mouths; measuring: the nearest
            column = (torch.randint(0, self.references.shape[1], (len(idx),), generator=self.generator).to(self.device)
                      if augment else torch.zeros_like(idx))
            reference = self.crops[self.references[idx, column]].float()
        if augment:
            crops, sketch, reference = self._augment(crops, sketch, reference)
        x = network_input(crops, reference, sketch, self.hidden.expand(len(idx), -1, -1, -1), torch.cat)
        return x, crops / 255.0

    def _augment(self, crops, sketch, reference):
        b = len(crops)
        g = self.generator
        angle = (torch.rand(b, generator=g) * 2 - 1) * math.radians(ROTATE_DEG)
        scale = 1 + (torch.rand(b, generator=g) * 2 - 1) * SCALE_JITTER
        shift = (torch.rand(b, 2, generator=g) * 2 - 1) * SHIFT_SHARE * 2  # grid units span 2
        theta = torch.stack([torch.stack([scale * torch.cos(angle), -scale * torch.sin(angle), shift[:, 0]], -1),
                             torch.stack([scale * torch.sin(angle), scale * torch.cos(angle), shift[:, 1]], -1)], 1)
        grid = F.affine_grid(theta.to(self.device), list(crops.shape), align_corners=False)
        both = F.grid_sample(torch.cat([crops, sketch], 1), grid, mode="bilinear", padding_mode="border",
                             align_corners=False)
        gain = (1 + (torch.rand(b, 3, 1, 1, generator=g) * 2 - 1) * GAIN_JITTER).to(self.device)
        crops = (both[:, :3] * gain).clamp(0, 255)
        return crops, both[:, 3:], (reference * gain).clamp(0, 255)

    # -- training ---------------------------------------------------------------------------

    def train(self, progress: Progress | None = None, until: int | None = None) -> dict:
        """Run the remaining steps (or up to step `until`, checkpointed there); returns the summary
        written to train.json."""
        c = self.config
        self.model.train()
        start = time.perf_counter()
        end = c.steps if until is None else min(until, c.steps)
        while self.step < end:
            idx = torch.randint(0, self.split, (c.batch,), generator=self.generator).to(self.device)
            x, target = self.inputs(idx, c.augment)
            if self.cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            loss, pred = self._loss(x, target)
            if c.band_weight:
                loss = loss + c.band_weight * band_loss(pred.float(), target, self.weight, c.band_mode)
            adversarial = self.discriminator is not None and self.step >= c.adversarial_start * c.steps
            if adversarial:
                seen = self.seen(pred, target)
                loss = loss + c.adversarial_weight * self.adversarial_loss(x, seen)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            d_loss = self.discriminator_step(x, target, seen.detach()) if adversarial else None
            self.step += 1
            info = {"loss": float(loss.detach())} if (self.step % 50 == 0 or self.step == c.steps) else {}
            if self.step % c.eval_every == 0 or self.step == c.steps:
                info = {"loss": float(loss.detach()), **self.evaluate()}
                self.model.train()
            if info and d_loss is not None:
                info["discriminator_loss"] = d_loss
            if info:
                self.history.append({"step": self.step, **info})
            if progress:
                progress(self.step, c.steps, info)
            if self.out_dir and (self.step % c.checkpoint_every == 0 or self.step in (c.steps, end)):
                self.train_seconds += time.perf_counter() - start
                start = time.perf_counter()
                self._checkpoint()
        self.train_seconds += time.perf_counter() - start
        return self.finish()

    def _loss(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The weighted L1 of the crop (and of the textured crop, `texture_weight`) and the crop."""
        c = self.config
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
            out = self.model.parts(x) if c.texture_weight else self.model(x)
        if not c.texture_weight:
            return ((out.float() - target).abs() * self.weight).mean(), out
        moved = move_reference(out, x[:, REFERENCE], self.model.grid)
        pred = mix_parts(out, moved)
        textured = textured_crop(pred, moved, TEXTURE_SIGMA * self.net_config.size / 256, c.texture_gain)
        loss = ((pred - target).abs() * self.weight).mean()
        return loss + c.texture_weight * ((textured - target).abs() * self.weight).mean(), pred

    def seen(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The drawn crop (B, 3, S, S) as the renderer pastes it: inside the hidden region, the real
        crop `target` outside (what the discriminator judges)."""
        soft = self.hidden / 255.0
        return soft * pred.float() + (1 - soft) * target

    def _scores(self, x: torch.Tensor, crop: torch.Tensor) -> torch.Tensor:
        """The discriminator's patch scores of `crop` next to the input's lip sketch and hidden mask."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
            sigma = TEXTURE_SIGMA * self.net_config.size / 256
            return self.discriminator(discriminator_input(crop, x[:, SHAPE], sigma)).float()

    def adversarial_loss(self, x: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """The network's adversarial loss on its drawn crops (the discriminator held fixed)."""
        self.discriminator.requires_grad_(False)
        fake = self._scores(x, seen)
        self.discriminator.requires_grad_(True)
        return generator_loss(fake, patch_weights(self.hidden / 255.0, fake))

    def discriminator_step(self, x: torch.Tensor, target: torch.Tensor, seen: torch.Tensor) -> float:
        """One step of the discriminator on real crops and the network's drawn ones; its loss."""
        real, fake = self._scores(x, target), self._scores(x, seen)
        loss = discriminator_loss(real, fake, patch_weights(self.hidden / 255.0, real))
        self.d_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.d_optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self, batch: int = 32) -> dict:
        """Held-out PSNR (dB, hidden region) of the model and of copying the reference crop."""
        self.model.eval()
        n = len(self.crops)
        if self.split >= n:
            return {}
        model_db, copy_db = [], []
        for start in range(self.split, n, batch):
            idx = torch.arange(start, min(start + batch, n), device=self.device)
            x, target = self.inputs(idx, augment=False)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
                pred = self.model(x.contiguous(memory_format=torch.channels_last) if self.cuda else x)
            model_db.append(psnr_hidden(pred, target, self.hide))
            copy_db.append(psnr_hidden(x[:, 3:6], target, self.hide))
        return {"heldout_psnr_db": float(torch.cat(model_db).mean()),
                "copy_reference_psnr_db": float(torch.cat(copy_db).mean())}

    def finish(self) -> dict:
        summary = {
            "arch": self.net_config.to_dict(),
            "config": asdict(self.config),
            "parameters": parameter_count(self.model),
            "device": str(self.device) + (f" ({torch.cuda.get_device_name(self.device)})" if self.cuda else ""),
            "torch": torch.__version__,
            "avatar": self.meta.get("name"),
            "frames": len(self.crops),
            "heldout_start": self.split,
            "reference": int(self.meta["reference"]),
            "train_seconds": round(self.train_seconds, 2),
            "steps": self.step,
            "history": self.history,
            **(self.history[-1] if self.history else {}),
        }
        summary.pop("step", None)
        if self.out_dir:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            np.savez(self.out_dir / "weights.npz", **state_to_numpy(self.model))
            (self.out_dir / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def _checkpoint(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "schedule": self.schedule.state_dict(), "step": self.step, "history": self.history,
                 "generator": self.generator.get_state(), "config": asdict(self.config),
                 "train_seconds": self.train_seconds}
        if self.discriminator is not None:
            state["discriminator"] = self.discriminator.state_dict()
            state["d_optimizer"] = self.d_optimizer.state_dict()
        tmp = self.out_dir / (CHECKPOINT + ".part")
        torch.save(state, tmp)
        tmp.replace(self.out_dir / CHECKPOINT)

    def _resume(self) -> None:
        # on the CPU: the RNG state must stay there; load_state_dict moves the rest to the device
        state = torch.load(self.out_dir / CHECKPOINT, map_location="cpu", weights_only=False)
        saved = dict(state["config"], device=self.config.device)
        if saved != asdict(self.config):
            raise NotSupportedError(f"{self.out_dir / CHECKPOINT} was made with another configuration ({state['config']}); "
                             "remove it or train into another folder")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.step, self.history = int(state["step"]), list(state["history"])
        self.generator.set_state(state["generator"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.train_seconds = float(state.get("train_seconds", 0.0))


def train(dataset, config: TrainConfig, out_dir: str | Path | None = None, progress: Progress | None = None) -> dict:
    """Train (or resume) on a dataset (.npz path or arrays dict); returns the summary dict."""
    return Trainer(dataset, config, out_dir).train(progress)


def rich_progress(description: str):
    """A rich progress bar with loss, held-out PSNR and ETA, and its `progress` callback."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn())
    task = bar.add_task(description, total=None, note="")
    notes: dict = {}

    def callback(step: int, total: int, info: dict) -> None:
        notes.update(info)
        note = " ".join(f"{k.split('_')[0]} {v:.3g}" for k, v in notes.items() if k in ("loss", "heldout_psnr_db"))
        bar.update(task, completed=step, total=total, note=note)

    return bar, callback


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train a neural renderer from a dataset .npz.")
    parser.add_argument("dataset")
    parser.add_argument("--out", required=True)
    for field, value in asdict(TrainConfig()).items():
        kind = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(value, bool) else type(value)
        default = None if field == "adversarial_weight" else value  # the arch's own unless given
        parser.add_argument(f"--{field.replace('_', '-')}", type=kind, default=default)
    args = vars(parser.parse_args(argv))
    dataset, out = args.pop("dataset"), args.pop("out")
    config = TrainConfig(**args)
    bar, callback = rich_progress(f"training {config.arch} on {Path(dataset).stem}")
    with bar:
        summary = train(dataset, config, out, callback)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))


if __name__ == "__main__":
    main()
