"""`lipstream bench`: measured profiles of every backend this machine and avatar offer.

A backend is a renderer, and for `neural` one (arch, variant) of the avatar's trained network,
on a device (the torch fp16/bf16 variants only where CUDA is). For each backend, in a fresh
process: render fps (the renderer's own batching, compositing included), p95 latency of one
frame, peak resident memory and peak GPU memory. For each backend x driver: the speech rendered
to an mp4 and measured by `lipstream eval` (offset, grade); backends under SLOW_FPS are evaluated
with the default driver only. Quality is the held-out PSNR/SSIM of the lower face, measured
for `bank` and the neural variants of a trained video avatar (`heldout_qualities`), else None.

Writes into DIR: profiles.json, report.md, performance_vs_sync.png, quantization_impact.png; and,
when asked (`install`), profiles.json also where `lipstream select` and `serve --renderer auto`
read this machine's profiles (default_profiles_path). A figure not measured on a row's own
device and machine is None, never copied from another row.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.audio.io import load_audio
from lipstream.avatar.package import AvatarPackage
from lipstream.avatar.resolve import bundled_asset, resolve_avatar
from lipstream.bench.machine import machine_info, peak_rss_mib
from lipstream.motion.drivers import DEFAULT_DRIVER, DRIVER_NAMES, get_driver
from lipstream.offline import RenderOptions, render_file
from lipstream.session.size import output_fps
from lipstream.neural.variants import TORCH_VARIANTS
from lipstream.select import (PRESETS, Profile, ProfileSet, backend_label, choose, default_profiles_path,
                              save_profiles)

SPEED_FRAMES = 100  # frames timed for fps
LATENCY_FRAMES = 40  # single frames timed for the p95 latency
SLOW_FPS = 10.0  # backends slower than this get one sync measurement (the default driver)
ONNX_PRECISION = {"fp32": "fp32", "int8-static": "int8", "int8-dynamic": "int8"}


@dataclass(frozen=True)
class Backend:
    """A renderer with its options (the neural renderer's arch and variant)."""

    renderer: str
    precision: str = "fp32"
    device: str = "cpu"
    model_bytes: int = 0
    options: dict = field(default_factory=dict, hash=False)

    @property
    def variant(self) -> str:
        """'arch/variant' of a neural network, '' for other renderers."""
        return f"{self.options['arch']}/{self.options['variant']}" if self.options else ""

    @property
    def label(self) -> str:
        return backend_label(self.renderer, self.variant)


def backends_for(avatar: AvatarPackage) -> list[Backend]:
    """Every backend that can render this avatar on this machine."""
    backends = [Backend("static"), Backend("warp")]
    if avatar.kind == "video":
        backends.append(Backend("bank"))
    neural = (avatar.manifest.get("models") or {}).get("neural", {})
    if not neural:
        return backends
    from lipstream.neural.runtime import cuda_available

    gpu = cuda_available()
    for arch, entry in sorted(neural.items()):
        files = entry["files"]
        for variant, precision in ONNX_PRECISION.items():
            if variant in files:
                backends.append(Backend("neural", precision, "cpu", files[variant]["bytes"],
                                        {"arch": arch, "variant": variant}))
        if gpu and "weights" in files:
            for variant in TORCH_VARIANTS:
                backends.append(Backend("neural", variant, "gpu", files["weights"]["bytes"] // 2,
                                        {"arch": arch, "variant": variant}))
    return backends


def heldout_qualities(avatar: AvatarPackage, backends: list[Backend]) -> dict[str, tuple[float, float, float]]:
    """{backend label: (PSNR dB, SSIM, sharpness ratio)} of the lower face on the held-out last fifth of a trained
    video avatar, given each frame's true mouth parameters (lipstream.bench.neural): bank built
    from the other frames, and every CPU neural variant. {} for avatars without a network."""
    variants = [(b.options["arch"], b.options["variant"]) for b in backends if b.renderer == "neural" and b.device == "cpu"]
    if not variants:
        return {}
    from lipstream.bench.neural import heldout_quality

    result = heldout_quality(avatar, variants)
    pick = lambda m: (m["psnr_db"], m["ssim"], m["sharpness_ratio"])  # noqa: E731
    qualities = {"bank": pick(result["bank"])}
    for arch, variant in variants:
        measured = result[f"neural {arch}/{variant}"]
        qualities[f"neural:{arch}/{variant}"] = pick(measured)
    return qualities


def measure_speed(avatar: AvatarPackage, backend: Backend, params: np.ndarray, fps: float) -> dict:
    """fps, p95 latency, peak RSS and GPU MiB of one backend, in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="lipstream-profile-") as work:
        np.save(Path(work) / "params.npy", params)
        spec = {"avatar": str(avatar.path), "renderer": backend.renderer, "options": backend.options, "fps": fps,
                "params": str(Path(work) / "params.npy")}
        code = "import sys; from lipstream.bench.profiles import _speed_main; _speed_main(sys.argv[1])"
        result = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _speed_main(spec_json: str) -> None:
    """Child process of measure_speed: prints one JSON line."""
    from lipstream.avatar.package import load_package
    from lipstream.motion.params import MouthTrack
    from lipstream.render.base import create_renderer

    spec = json.loads(spec_json)
    params = np.load(spec["params"])
    renderer = create_renderer(spec["renderer"], load_package(spec["avatar"]), **spec["options"])
    for _ in renderer.render(MouthTrack(params[:16], spec["fps"])):  # warm-up: first-call costs
        pass
    track = MouthTrack(params[:SPEED_FRAMES], spec["fps"])
    start = time.perf_counter()
    frames = sum(1 for _ in renderer.render(track))
    fps = frames / (time.perf_counter() - start)
    latencies = []
    for k in range(min(LATENCY_FRAMES, len(params))):
        start = time.perf_counter()
        renderer.render_frame(k, params[k])
        latencies.append((time.perf_counter() - start) * 1e3)
    gpu_mib = None
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        gpu_mib = round(sys.modules["torch"].cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps({"fps": round(fps, 1), "latency_p95_ms": round(float(np.percentile(latencies, 95)), 2),
                      "peak_memory_mib": peak_rss_mib(),
                      "gpu_memory_mib": gpu_mib}))


def measure_sync(avatar: AvatarPackage, backend: Backend, audio: np.ndarray, driver: str, work: Path) -> dict:
    """Offset (ms) and grade from `lipstream eval` of the speech rendered with backend and driver."""
    from lipstream.errors import LipstreamError
    from lipstream.evaluate import evaluate_video_sync

    out = work / f"{backend.label.replace('/', '-').replace(':', '-')}-{driver}.mp4"
    options = RenderOptions(driver=driver, renderer=backend.renderer, renderer_options=backend.options)
    try:
        render_file(avatar, audio, out, options, sample_rate=SAMPLE_RATE)
        metrics = evaluate_video_sync(out)
    except LipstreamError as exc:
        return {"error": str(exc)}
    finally:
        out.unlink(missing_ok=True)
    return {"sync_offset_ms": round(metrics.offset_ms, 1), "sync_grade": metrics.grade}


def run_profiles(avatar: str = "default", audio: str | Path | None = None, drivers: tuple[str, ...] = DRIVER_NAMES,
                 progress=None) -> ProfileSet:
    """Every backend x driver for `avatar` speaking `audio` (default: the bundled speech)."""
    package = resolve_avatar(avatar)
    speech = load_audio(audio or bundled_asset("speech.wav"))
    fps = output_fps(package, None)
    params = get_driver(DEFAULT_DRIVER, fps).drive(speech).values
    params = np.resize(params, (max(SPEED_FRAMES, len(params)), params.shape[1]))
    driver_ms = {name: _driver_ms_per_frame(speech, fps, name) for name in drivers}
    backends = backends_for(package)
    qualities = heldout_qualities(package, backends)
    profiles: list[Profile] = []
    steps, done = len(backends) * (1 + len(drivers)), 0
    with tempfile.TemporaryDirectory(prefix="lipstream-profiles-") as work:
        for backend in backends:
            speed = measure_speed(package, backend, params, fps)
            done += 1
            if progress:
                progress(done, steps)
            psnr, ssim, sharpness = qualities.get(backend.label, (None, None, None))
            base = Profile(backend.renderer, DEFAULT_DRIVER, backend.device, backend.precision, backend.variant,
                           model_mib=round(backend.model_bytes / 2**20, 2), quality_psnr_db=psnr, quality_ssim=ssim,
                           quality_sharpness=sharpness,
                           note=speed.get("error", ""),
                           **{k: speed.get(k) for k in ("fps", "latency_p95_ms", "peak_memory_mib", "gpu_memory_mib")})
            if backend.renderer == "static" or "error" in speed:
                profiles.append(replace(base, driver="none", note=base.note or "does not move the mouth: no sync"))
                done += len(drivers)
                continue
            slow = (base.fps or 0) < SLOW_FPS
            for driver in drivers:
                done += 1
                if slow and driver != DEFAULT_DRIVER:
                    continue
                sync = measure_sync(package, backend, speech, driver, Path(work))
                profiles.append(replace(base, driver=driver, driver_ms_per_frame=driver_ms[driver],
                                        sync_offset_ms=sync.get("sync_offset_ms"),
                                        sync_grade=sync.get("sync_grade"), note=sync.get("error", "")))
                if progress:
                    progress(done, steps)
    machine = machine_info()
    machine["audio_s"] = round(len(speech) / SAMPLE_RATE, 2)
    return ProfileSet(profiles, machine, avatar=str(avatar))


def _driver_ms_per_frame(speech: np.ndarray, fps: float, name: str) -> float:
    """The driver's time per video frame of the speech (ms), after a warm-up run."""
    driver = get_driver(name, fps)
    driver.drive(speech[:SAMPLE_RATE])
    start = time.perf_counter()
    frames = len(driver.drive(speech))
    return round((time.perf_counter() - start) * 1e3 / frames, 3)


def merge_profiles(profile_set: ProfileSet, extra: ProfileSet) -> ProfileSet:
    """Profiles measured elsewhere added to this machine's set, each marked with its machine."""
    where = extra.machine.get("cpu") or extra.machine.get("gpu") or "another machine"
    marked = [p if p.measured_on else replace(p, measured_on=where) for p in extra.profiles]
    return ProfileSet(profile_set.profiles + marked, profile_set.machine, profile_set.avatar)


def gpu_profiles(profile_set: ProfileSet, runner_results: dict) -> list[Profile]:
    """GPU rows from `lipstream.bench.neural_runner` results (a machine with CUDA but without
    lipstream's media stack): one row per network and precision, with what the runner measured
    there (fps at batch 32, GPU memory). Sync, quality and the driver's cost were not measured
    on that machine, so they are None and `select` does not rank those rows on them; the
    note gives how close the GPU output is to the fp32 network's (PSNR, measured there)."""
    gpu = runner_results.get("machine", {}).get("gpu", "GPU")
    rows, seen = [], set()
    for p in profile_set.profiles:
        if p.renderer != "neural" or not p.variant.endswith("/fp32"):
            continue
        arch = p.variant.split("/")[0]
        for precision in TORCH_VARIANTS:
            measured = runner_results.get(f"{arch}/{precision}")
            if not measured or (arch, precision) in seen:
                continue
            seen.add((arch, precision))
            note = (f"fps through the runner at batch 32, compositing not included; output within "
                    f"{measured['psnr_vs_onnx_fp32_db']:.0f} dB of the fp32 network; sync and quality not measured "
                    "on this device")
            rows.append(Profile("neural", "none", device="gpu", precision=precision, variant=f"{arch}/{precision}",
                                fps=measured["runner_fps_batch32"], gpu_memory_mib=measured["gpu_memory_mib"],
                                model_mib=round(p.model_mib / 2, 2), measured_on=gpu, note=note))
    return rows


def write_report(profile_set: ProfileSet, out_dir: Path, install: bool = False) -> list[Path]:
    """profiles.json, report.md and the two plots in out_dir; with `install`, the profiles also
    go where `select` and `serve` read this machine's by default (the last path returned)."""
    out_dir = Path(out_dir)
    paths = [save_profiles(profile_set, out_dir / "profiles.json")]
    paths.append(_markdown(profile_set, out_dir / "report.md"))
    paths += _plots(profile_set, out_dir)
    if install:
        paths.append(save_profiles(profile_set, default_profiles_path()))
    return paths


def preset_picks(profiles: list[Profile]) -> dict[str, dict]:
    """The selector's pick for each preset, or why there is none."""
    from lipstream.errors import NotSupportedError

    picks = {}
    for name, constraints in PRESETS.items():
        try:
            choice = choose(profiles, constraints)
            picks[name] = {"pick": choice.profile.label(), "reason": choice.reason}
        except NotSupportedError as exc:
            picks[name] = {"pick": None, "reason": str(exc)}
    return picks


def _cell(value, pattern="{:.1f}") -> str:
    return "-" if value is None else pattern.format(value)


def _markdown(profile_set: ProfileSet, path: Path) -> Path:
    m = profile_set.machine
    lines = [f"# Backend profiles: avatar `{profile_set.avatar}`", "",
             f"Measured {m.get('measured_utc')} on {m.get('cpu')} ({m.get('cores')} cores, {m.get('memory_gib')} GiB), "
             f"lipstream {m.get('lipstream')}; speech {m.get('audio_s')} s.", "",
             "fps: the renderer alone; with driver: through driver and renderer, the speed `select` uses. "
             "A dash is a figure not measured on that row's device: `select` does not rank on it.", "",
             "| backend | precision | device | driver | fps | with driver | p95 ms | peak MiB | GPU MiB | model MiB "
             "| PSNR dB | sync ms | grade | measured on | note |", "|" + " --- |" * 15]
    for p in profile_set.profiles:
        lines.append(f"| {p.backend} | {p.precision} | {p.device} | {p.driver} | {_cell(p.fps, '{:.0f}')} | "
                     f"{_cell(p.pipeline_fps, '{:.0f}')} | "
                     f"{_cell(p.latency_p95_ms)} | {_cell(p.peak_memory_mib, '{:.0f}')} | {_cell(p.gpu_memory_mib, '{:.0f}')} "
                     f"| {_cell(p.model_mib, '{:.2f}')} | {_cell(p.quality_psnr_db)} | {_cell(p.sync_offset_ms, '{:+.0f}')} "
                     f"| {p.sync_grade or '-'} | {p.measured_on or 'this machine'} | {p.note} |")
    lines += ["", "## The selector's pick per preset", "", "| preset | pick | why |", "| --- | --- | --- |"]
    for name, pick in preset_picks(profile_set.profiles).items():
        lines.append(f"| `{name}` | {pick['pick'] or 'none'} | {pick['reason']} |")
    path.write_text("\n".join(lines) + "\n")
    return path


def _plots(profile_set: ProfileSet, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    synced = [p for p in profile_set.profiles if p.sync_offset_ms is not None and p.pipeline_fps]
    colours = {name: f"C{i}" for i, name in enumerate(sorted({p.driver for p in synced}))}
    fig, ax = plt.subplots(figsize=(9, 5.5))
    labelled = set()
    for p in synced:
        ax.scatter(p.pipeline_fps, abs(p.sync_offset_ms), color=colours[p.driver],
                   marker="o" if p.device == "cpu" else "s")
        if (p.backend, p.precision) not in labelled:  # one label per backend, at its first point
            labelled.add((p.backend, p.precision))
            ax.annotate(f"{p.backend} {p.precision}", (p.pipeline_fps, abs(p.sync_offset_ms)), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    for name, colour in colours.items():
        ax.scatter([], [], color=colour, label=f"driver {name}")
    ax.axhline(40, color="green", ls="--", lw=0.8, label="grade A (40 ms)")
    ax.axvline(25, color="grey", ls=":", lw=0.8, label="25 fps")
    ax.set(xscale="log", xlabel="frames per second through driver and renderer (log)", ylabel="|A/V offset| (ms)",
           title="Performance vs sync (circles CPU, squares GPU)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    scatter = out_dir / "performance_vs_sync.png"
    fig.savefig(scatter, dpi=120)
    plt.close(fig)

    neural = {}
    for p in profile_set.profiles:
        if p.renderer == "neural" and p.driver == DEFAULT_DRIVER:
            neural[(p.variant, p.device)] = p
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    labels = [f"{v}\n{d}" for v, d in neural]
    for ax, (attr, title) in zip(axes, (("model_mib", "model size (MiB)"), ("fps", "frames per second (log)"),
                                        ("quality_psnr_db", "held-out PSNR (dB)"))):
        values = [getattr(p, attr) or 0 for p in neural.values()]
        ax.bar(range(len(neural)), values, color=["C0" if d == "cpu" else "C1" for _, d in neural])
        ax.set_xticks(range(len(neural)), labels, fontsize=7, rotation=45, ha="right")
        ax.set_title(title)
        if attr == "fps":
            ax.set_yscale("log")
        if attr == "quality_psnr_db" and any(values):  # the differences, not the distance from 0 dB
            measured = [v for v in values if v]
            ax.set_ylim(min(measured) - 1.0, max(measured) + 0.5)
    fig.suptitle("Quantisation impact (neural variants; blue CPU, orange GPU)")
    fig.tight_layout()
    impact = out_dir / "quantization_impact.png"
    fig.savefig(impact, dpi=120)
    plt.close(fig)
    return [scatter, impact]
