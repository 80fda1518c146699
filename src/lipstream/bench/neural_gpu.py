"""The GPU half of `lipstream bench neural`: train on many datasets at once, time fp32/fp16/bf16.

Runs on a machine with torch, numpy and a CUDA GPU, without lipstream's media libraries:

    PYTHONPATH=src python -m lipstream.bench.neural_gpu --sets DIR --out DIR [--steps-full N ...]

For every dataset .npz in DIR it trains the `full` and the `lite` network with each head of
`--heads` (several trainings share the GPU, `--workers` processes), measures each on the
held-out crops (neural_quality.region_quality over the hidden region, the drawing blended into
the real crop as the renderer blends it; the warp head's texture at crop resolution here, at
frame resolution in `lipstream bench neural`), then on the held-out frames compares each network run
in fp32, fp16 and bf16 (PSNR against the real crops and against fp32, hidden region), and
times batched inference. It writes `gpu.json` (figures, machine, each training's summary) and
packs the weights as float16 (full) and float32 (lite) into a few .npz files, for
`lipstream train AVATAR --weights FILE` to install into the avatar packages.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

PACK_BYTES = 14 * 2**20  # one packed weights file stays under this


def _train_one(args: tuple[str, str, str, int, int, str, dict]) -> dict:
    dataset, arch, head, steps, batch, out_dir, extra = args
    from lipstream.neural.train import TrainConfig, Trainer

    start = time.perf_counter()
    trainer = Trainer(dataset, TrainConfig(arch=arch, head=head, steps=steps, batch=batch, **extra,
                                           eval_every=max(steps // 4, 1), checkpoint_every=steps), out_dir)
    summary = trainer.train()
    summary["wall_seconds_with_loading"] = round(time.perf_counter() - start, 2)
    summary["dataset"] = Path(dataset).stem
    summary["crop_quality"] = crop_quality(trainer)
    return summary


def crop_quality(trainer, batch: int = 32) -> dict:
    """region_quality of the trained network on the held-out crops (hidden region), its drawing
    blended into the real crop with the renderer's blend weights."""
    import torch

    from lipstream.bench.neural_quality import region_quality
    from lipstream.neural.geometry import CropGeometry

    size = trainer.net_config.size
    geometry = CropGeometry.from_dict(trainer.meta["geometry"])
    blend = torch.from_numpy(geometry.blend_mask(size)).to(trainer.device)[None, None]
    region = geometry.hidden_mask(size) > 127
    trainer.model.eval()
    renders, reals = [], []
    with torch.no_grad():
        for start in range(trainer.split, len(trainer.crops), batch):
            idx = torch.arange(start, min(start + batch, len(trainer.crops)), device=trainer.device)
            x, target = trainer.inputs(idx, augment=False)
            with torch.autocast(trainer.device.type, dtype=torch.bfloat16, enabled=trainer.cuda):
                pred = trainer.model(x).float()
            out = blend * pred + (1 - blend) * target
            to_images = lambda t: (t.clamp(0, 1) * 255 + 0.5).byte().permute(0, 2, 3, 1).cpu().numpy()  # noqa: E731
            renders += list(to_images(out))
            reals += list(to_images(target))
    return region_quality(renders, reals, [region] * len(reals))


def _throughput(arch: str, batch: int, dtype, repeats: int = 30) -> float:
    """Frames per second of a network's forward pass on the GPU at `batch`, dtype, channels-last."""
    import torch

    from lipstream.neural.layout import IN_CHANNELS
    from lipstream.neural.model import build_model

    model = build_model(arch).cuda().eval().to(memory_format=torch.channels_last).to(dtype)
    size = model.config.size
    inputs = [torch.rand(batch, IN_CHANNELS, size, size, device="cuda", dtype=dtype)
              .contiguous(memory_format=torch.channels_last) for _ in range(4)]
    with torch.inference_mode():
        for i in range(10):
            model(inputs[i % 4])
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for r in range(5):
            start.record()
            for i in range(repeats):
                model(inputs[i % 4])
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / repeats)
    return batch / float(np.median(times))


def _precision_quality(dataset: str, arch: str, head: str, weights: Path) -> dict:
    """Held-out PSNR (hidden region) of fp32 / fp16 / bf16 / fp32-with-fp16-weights, and vs fp32."""
    import torch

    from lipstream.neural.model import build_model, load_numpy_state
    from lipstream.neural.train import TrainConfig, Trainer, psnr_hidden

    trainer = Trainer(dataset, TrainConfig(arch=arch, head=head, steps=1, device="cuda"))
    state = dict(np.load(weights))
    idx = torch.arange(trainer.split, len(trainer.crops), device="cuda")
    x, target = trainer.inputs(idx, augment=False)
    outputs = {}
    with torch.inference_mode():
        for name, dtype, rounded in (("fp32", torch.float32, False), ("fp16", torch.float16, False),
                                     ("bf16", torch.bfloat16, False), ("fp32_fp16_weights", torch.float32, True)):
            use = {k: (v.astype(np.float16) if rounded and v.dtype == np.float32 else v) for k, v in state.items()}
            model = load_numpy_state(build_model(trainer.net_config), use).cuda().eval().to(dtype)
            outputs[name] = torch.cat([model(x[i:i + 32].to(dtype)).float() for i in range(0, len(x), 32)])
    result = {}
    for name, out in outputs.items():
        result[name] = {"psnr_vs_real_db": round(float(psnr_hidden(out, target, trainer.hide).mean()), 3),
                        "psnr_vs_fp32_db": round(float(psnr_hidden(out, outputs["fp32"], trainer.hide).mean()), 2)}
    return result


def _pack(results_dir: Path, out: Path, archs: list[str]) -> list[str]:
    """Pack every weights.npz (lite as float32, the others as float16) into files under PACK_BYTES."""
    files, current, size = [], {}, 0

    def flush():
        nonlocal current, size
        if current:
            path = out / f"weights-{len(files)}.npz"
            np.savez(path, **current)
            files.append(path.name)
            current, size = {}, 0

    for arch in archs:
        for weights in sorted((results_dir / arch).glob("*/weights.npz")):
            state = dict(np.load(weights))
            if not arch.startswith("lite"):
                state = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in state.items()}
            nbytes = sum(v.nbytes for v in state.values())
            if size + nbytes > PACK_BYTES:
                flush()
            key = f"{arch}/{weights.parent.name}"
            current.update({f"{key}/{k}": v for k, v in state.items()})
            size += nbytes
    flush()
    return files


def _run_name(arch: str, head: str, heads: list[str]) -> str:
    """The work folder of (arch, head): the first head's is the arch's own name (packed)."""
    return arch if head == heads[0] else f"{arch}-{head}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/neural-work")
    parser.add_argument("--steps-full", type=int, default=2000)
    parser.add_argument("--steps-lite", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--archs", default="full,lite", help="comma-separated archs to train (full, lite)")
    parser.add_argument("--heads", default="", help="comma-separated heads to train (rgb, warp); default: "
                        "each arch's own. The first is packed.")
    parser.add_argument("--band-archs", default="", help="comma-separated archs also trained with the band "
                        "loss (train.band_loss), once per mode, into ARCH-band-MODE (packed too)")
    parser.add_argument("--band-weight", type=float, default=1.0)
    parser.add_argument("--texture-weight", type=float, default=0.0, help="train.TrainConfig.texture_weight of "
                        "the packed networks (the L1 on the textured crop; 0 = off)")
    parser.add_argument("--adversarial-archs", default="", help="comma-separated archs also trained with the "
                        "patch discriminator (train.TrainConfig.adversarial_weight), once per weight of "
                        "--adversarial-weights, into ARCH-advWEIGHT (packed too)")
    parser.add_argument("--adversarial-weights", default="0.01")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="only the first N datasets (0 = all)")
    args = parser.parse_args(argv)
    import torch

    from lipstream.bench.machine import machine_info
    from lipstream.neural.train import BAND_MODES

    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    sets = sorted(Path(args.sets).glob("*.npz"))
    if args.limit:
        sets = sets[: args.limit]
    report: dict = {"machine": machine_info(), "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                    "steps": {"full": args.steps_full, "lite": args.steps_lite}, "batch": args.batch,
                    "workers": args.workers}
    heads = [h for h in args.heads.split(",") if h] or [""]
    steps = {"full": args.steps_full, "lite": args.steps_lite}
    archs = [a for a in args.archs.split(",") if a]
    texture = {"texture_weight": args.texture_weight} if args.texture_weight else {}
    jobs = [(str(s), arch, head, steps[arch], args.batch, str(work / _run_name(arch, head, heads) / s.stem), texture)
            for head in heads for arch in archs for s in sets]
    band = {f"{arch}-band-{mode}": (arch, mode) for arch in args.band_archs.split(",") if arch for mode in BAND_MODES}
    jobs += [(str(s), arch, heads[0], steps[arch], args.batch, str(work / run / s.stem),
              {"band_weight": args.band_weight, "band_mode": mode}) for run, (arch, mode) in band.items() for s in sets]
    adversarial = {f"{arch}-adv{w:g}": (arch, w) for arch in args.adversarial_archs.split(",") if arch
                   for w in (float(v) for v in args.adversarial_weights.split(",") if v)}
    jobs += [(str(s), arch, heads[0], steps[arch], args.batch, str(work / run / s.stem), {"adversarial_weight": w})
             for run, (arch, w) in adversarial.items() for s in sets]
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        report["trainings"] = []
        for summary in pool.imap_unordered(_train_one, jobs):
            short = {k: v for k, v in summary.items() if k not in ("history", "config")}
            report["trainings"].append(summary)
            print(json.dumps(short), flush=True)
    report["all_trainings_wall_s"] = round(time.perf_counter() - start, 1)
    report["throughput_fps"] = {}
    for arch in archs:
        for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
            for batch in (1, 32, 128):
                fps = _throughput(arch, batch, dtype)
                report["throughput_fps"][f"{arch}/{name}/batch{batch}"] = round(fps, 1)
                print(f"{arch} {name} batch {batch}: {fps:.0f} frames/s", flush=True)
    report["precision"] = {}
    for s in sets:
        for arch in archs:
            weights = work / arch / s.stem / "weights.npz"
            if weights.exists():
                report["precision"][f"{arch}/{s.stem}"] = _precision_quality(str(s), arch, heads[0], weights)
    report["packed"] = _pack(work, out, [*archs, *band, *adversarial])
    (out / "gpu.json").write_text(json.dumps(report, indent=1) + "\n")
    for t in sorted(report["trainings"], key=lambda t: (t["arch"]["name"], t["config"].get("band_mode", ""),
                                                        t["config"].get("band_weight", 0),
                                                        t["config"].get("adversarial_weight", 0), t["dataset"])):
        q = t["crop_quality"]
        band = (f"{t['config']['band_mode'][:5]}{t['config']['band_weight']:g}" if t["config"].get("band_weight")
                else f"adv{t['config']['adversarial_weight']:g}" if t["config"].get("adversarial_weight") else "-")
        print(f"{t['dataset'][-14:]:>14} {t['arch']['name']:4} {t['arch']['head']:4} {band:6} n {t['frames']:3} "
              f"train {t['train_seconds']:5.1f}s wall {t['wall_seconds_with_loading']:5.1f}s "
              f"psnr {q['psnr_db']:5.2f} ssim {q['ssim']:.3f} sharp {q['sharpness_ratio']:.2f} "
              f"hf {q['high_frequency_ratio']:.2f} gms {q['gradient_similarity']:.3f} chg {q['change_vs_real']:.2f}")
    print("total wall", report["all_trainings_wall_s"], "files", report["packed"], os.listdir(out))


if __name__ == "__main__":
    main()
