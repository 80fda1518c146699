"""The `lipstream` command: demo, prepare, render, info, eval, sheet, serve, batch, select, bench."""

from __future__ import annotations

import functools
import logging
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lipstream.errors import LipstreamError

app = typer.Typer(
    help="Lip-sync: speech audio in, a talking-face video of a chosen avatar out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Measure speed and accuracy; results are written as JSON naming the machine. "
                        "With no sub-command: profiles of every backend x driver for `select` and `serve`.")
app.add_typer(bench_app, name="bench")
console = Console(stderr=True)


@app.callback()
def _global_options(
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Debug logging, native libraries' own log lines included (or LIPSTREAM_LOG=debug).",
    )] = False,
) -> None:
    if verbose:
        os.environ["LIPSTREAM_LOG"] = "debug"  # read by the code that silences native libraries
        logging.getLogger().setLevel(logging.DEBUG)


def friendly(command):
    """Print LipstreamErrors as one red line and exit with their code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except LipstreamError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]; nothing was written")
            raise typer.Exit(130) from None

    return wrapper


def progress_bar(description: str):
    """A rich progress bar and a `callback(done, total)` that advances it."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
    task = bar.add_task(description, total=None)

    def callback(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, callback


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'512x512' -> (512, 512); None stays None."""
    if text is None:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"size must look like 512x512, not {text!r}") from None
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise typer.BadParameter("width and height must be even and at least 16")
    return width, height


def parse_crop(text: str | None) -> tuple[int, int, int, int] | None:
    """'10,20,200,220' -> (10, 20, 200, 220); None stays None."""
    if text is None:
        return None
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"crop must look like X0,Y0,X1,Y1, not {text!r}") from None
    if x1 <= x0 or y1 <= y0 or min(x0, y0) < 0:
        raise typer.BadParameter("crop needs 0 <= X0 < X1 and 0 <= Y0 < Y1")
    return x0, y0, x1, y1


class Choice(str, Enum):
    """A CLI choice: typer checks it before the command runs (exit 2, naming the valid values)."""

    def __str__(self) -> str:
        return self.value


Quality = Choice("Quality", {name: name for name in ("fast", "standard", "high")})  # sinks.mp4.QUALITY
RendererChoice = Choice("RendererChoice", {n: n for n in ("auto", "static", "warp", "bank", "neural")})  # render registry
DriverChoice = Choice("DriverChoice", {n: n for n in ("energy", "viseme", "phoneme")})  # motion.drivers.DRIVER_NAMES
AudioCodec = Choice("AudioCodec", {n: n for n in ("aac", "pcm", "flac", "copy")})  # sinks.mp4.AUDIO_CODECS
SelectPreset = Choice("SelectPreset", {n: n for n in ("high_quality", "real_time", "mobile", "precision")})  # select.PRESETS
SelectDevice = Choice("SelectDevice", {n: n for n in ("cpu", "gpu", "any")})
Precision = Choice("Precision", {n: n for n in ("fp32", "fp16", "bf16", "int8")})
TrainArch = Choice("TrainArch", {n: n for n in ("full", "lite", "both")})
TrainDevice = Choice("TrainDevice", {n: n for n in ("auto", "cuda", "cpu")})
LogLevel = Choice("LogLevel", {n: n for n in ("debug", "info", "warning", "error")})


def _value(choice: Choice | None) -> str | None:
    return None if choice is None else choice.value


AvatarOpt = Annotated[str, typer.Option("--avatar", "-a", help="'default', an avatar package directory, or a photo/video (prepared on the fly).")]


@app.command()
@friendly
def prepare(
    source: Annotated[Path, typer.Argument(help="A photo or a video of one person's face.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Package directory to write (replaced if it is a package).")],
    fps: Annotated[float, typer.Option(help="Frame rate to resample a video to.")] = 25.0,
) -> None:
    """Prepare a photo or video into an avatar package (landmarks, masks, mouth bank)."""
    from lipstream.avatar.package import load_package
    from lipstream.avatar.prepare import prepare as run_prepare

    bar, callback = progress_bar(f"preparing {source.name}")
    with bar:
        path = run_prepare(source, out, fps=fps, progress=callback)
    package = load_package(path)
    console.print(f"[green]prepared[/] {path}: {package.kind}, {package.frame_count} frame(s) at "
                  f"{package.fps:g} fps, {package.size[0]}x{package.size[1]}")


@app.command()
@friendly
def train(
    avatar: Annotated[Path, typer.Argument(help="A video avatar package (lipstream prepare VIDEO -o DIR).")],
    arch: Annotated[TrainArch, typer.Option(help="full (256 px, GPU), lite (128 px, CPU real time) or both.")] = TrainArch.both,
    steps: Annotated[Optional[int], typer.Option(help="Training steps per network (default: 1400 full, 3000 lite).")] = None,
    batch: Annotated[int, typer.Option(help="Crops per step.")] = 32,
    device: Annotated[TrainDevice, typer.Option(help="auto: a CUDA GPU if torch sees one.")] = TrainDevice.auto,
    weights: Annotated[Optional[list[Path]], typer.Option(help="Install weights trained elsewhere on this avatar's dataset instead of training.")] = None,
    dataset_only: Annotated[Optional[Path], typer.Option(help="Only write the training set (.npz) here, to train on another machine.")] = None,
) -> None:
    """Train the neural renderer on a video avatar's own footage and store it (with INT8 variants) in the package."""
    from lipstream.avatar.package import load_package
    from lipstream.neural.fit import ARCHS, check_trainable, train_avatar

    archs = ARCHS if arch.value == "both" else (arch.value,)
    device = device.value
    package = load_package(avatar)
    check_trainable(package)
    if dataset_only is not None:
        from lipstream.neural.dataset import build_dataset, save_dataset

        bar, callback = progress_bar("building the training set")
        with bar:
            save_dataset(build_dataset(package, jpeg_quality=93, progress=callback), dataset_only)
        console.print(f"[green]wrote[/] {dataset_only}; train it with: python -m lipstream.neural.train "
                      f"{dataset_only} --arch full --out DIR, then lipstream train {avatar} --weights DIR/weights.npz")
        return

    def train_progress(name: str):
        from lipstream.neural.train import rich_progress

        return rich_progress(f"training {name}")

    entries = train_avatar(package, archs, steps={a: steps for a in archs} if steps else None, batch=batch,
                           device=device, weights=weights, dataset_progress=progress_bar("building the training set"),
                           train_progress=train_progress)
    for name, entry in entries.items():
        t = entry["trained"]
        quality = (f"held-out {t['heldout_psnr_db']:.1f} dB (copying the reference: {t['copy_reference_psnr_db']:.1f} dB)"
                   if "heldout_psnr_db" in t else "")
        console.print(f"[green]trained[/] {name}: {', '.join(entry['files'])} {quality}")


@app.command()
@friendly
def render(
    audio: Annotated[Path, typer.Option("--audio", help="Speech: wav, flac, mp3, m4a, ogg/opus, or a video's audio track.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The mp4 to write.")],
    avatar: AvatarOpt = "default",
    driver: Annotated[Optional[DriverChoice], typer.Option(help="Audio -> mouth driver (default: phoneme, the most accurate).")] = None,
    renderer: Annotated[RendererChoice, typer.Option(
        help="neural needs a video avatar after `lipstream train`; auto: bank for video avatars, warp for photos.")
    ] = RendererChoice.auto,
    fps: Annotated[Optional[float], typer.Option(min=1, max=120, help="Output frame rate (default: the avatar's, 25).")] = None,
    size: Annotated[Optional[str], typer.Option(help="Output size WIDTHxHEIGHT (default: the avatar's).")] = None,
    quality: Annotated[Quality, typer.Option(help="Video encoder quality.")] = Quality.standard,
    audio_codec: Annotated[AudioCodec, typer.Option(
        help="The input audio at its own rate and channels as AAC, as PCM (.mov/.mkv; bit-exact for 16-bit input), "
             "as FLAC, or copied unchanged from the input file.")] = AudioCodec.aac,
    still: Annotated[bool, typer.Option("--still", help="No blinks or head sway on a photo avatar.")] = False,
    live_preset: Annotated[Optional[str], typer.Option(
        help="Render as a live stream of this preset would (its look-ahead and driver): what `serve` sends.")] = None,
    evaluate: Annotated[bool, typer.Option("--eval", help="Measure the output's A/V offset after rendering.")] = False,
) -> None:
    """Render AUDIO spoken by an avatar into a video (.mp4, .mov or .mkv) with the input audio muxed in sync."""
    from lipstream.avatar.resolve import resolve_avatar
    from lipstream.offline import RenderOptions, render_file
    from lipstream.sinks.mp4 import check_audio_codec, check_writable

    from lipstream.session.presets import get_preset

    check_writable(out)
    check_audio_codec(out, audio_codec.value)
    if live_preset is not None:
        get_preset(live_preset)  # a typo fails now, not after decoding
    options = RenderOptions(fps=fps, size=parse_size(size), driver=_value(driver), renderer=renderer.value,
                            quality=quality.value, still=still, audio_codec=audio_codec.value, live_preset=live_preset)
    bar, callback = progress_bar("rendering")
    with bar:
        package = resolve_avatar(avatar, fps=fps or 25.0, progress=callback)
        summary = render_file(package, audio, out, options, progress=callback)
    console.print(_summary_line(summary))
    if evaluate:
        from lipstream.evaluate import run_eval

        raise typer.Exit(run_eval([summary.path]))


@app.command()
@friendly
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="The mp4 to write.")] = Path("out/demo.mp4"),
) -> None:
    """Render the bundled default avatar speaking the bundled clip (no arguments, no network)."""
    from lipstream.avatar.resolve import bundled_asset, resolve_avatar
    from lipstream.offline import render_file

    out.parent.mkdir(parents=True, exist_ok=True)
    bar, callback = progress_bar("rendering the demo")
    with bar:
        package = resolve_avatar("default", progress=callback)
        summary = render_file(package, bundled_asset("speech.wav"), out, progress=callback)
    console.print(_summary_line(summary))


@app.command()
@friendly
def info(avatar: Annotated[str, typer.Argument(help="'default', a package directory, or a photo/video.")]) -> None:
    """Show what an avatar package holds."""
    from rich.table import Table

    from lipstream.avatar.resolve import resolve_avatar

    package = resolve_avatar(avatar)
    table = Table(title=f"avatar {package.name}", show_header=False)
    m = package.manifest
    for key, value in (
        ("path", str(package.path)),
        ("kind", package.kind),
        ("frames", f"{package.frame_count} at {package.fps:g} fps ({package.frame_count / package.fps:.1f} s)"),
        ("size", f"{package.size[0]}x{package.size[1]}"),
        ("source", f"{m['source']['name']} (sha256 {m['source']['sha256'][:12]})"),
        ("mouth bank", f"{len(package.bank['params'])} mouths" if "params" in package.bank else "none"),
        ("neural models", _models_line(package)),
        ("schema", str(m["schema"])),
        ("made by", f"lipstream {m.get('lipstream')} at {m.get('created_utc')}"),
    ):
        table.add_row(key, value)
    Console().print(table)



def _models_line(package) -> str:
    """'lite: fp32, int8-static (held-out 30.4 dB); ...' or 'none (lipstream train ...)'."""
    entries = package.models.get("neural", {})
    if not entries:
        return "none" + (f" (train one: lipstream train {package.path})" if package.kind == "video" else "")
    parts = []
    for arch, entry in sorted(entries.items()):
        psnr = entry.get("trained", {}).get("heldout_psnr_db")
        held = f" (held-out {psnr:.1f} dB)" if psnr is not None else ""
        parts.append(f"{arch}: {', '.join(v for v in entry['files'] if v != 'weights')}{held}")
    return "; ".join(parts)


@app.command("eval")
@friendly
def eval_(
    videos: Annotated[list[Path], typer.Argument(help="Talking-face videos to measure.")],
    audio: Annotated[Optional[Path], typer.Option("--audio", help="Reference audio that starts with the video (default: the video's own track).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write JSON, Markdown and PNG reports into this directory.")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Also write one table and one plot across all the videos.")] = False,
    fix: Annotated[Optional[Path], typer.Option("--fix", help="Write a copy with the audio re-aligned by the measured offset (one video only; video stream copied).")] = None,
) -> None:
    """Measure the A/V offset of talking-face videos (ms; + = audio early, as SyncNet) and grade the sync."""
    from lipstream.evaluate import run_eval

    raise typer.Exit(run_eval(videos, audio, out_dir, compare, fix))


@app.command()
@friendly
def sheet(
    video: Annotated[Path, typer.Argument(help="A video to look at.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The PNG to write.")] = Path("out/sheet.png"),
    every: Annotated[int, typer.Option(help="Take every N-th frame.")] = 4,
    seconds: Annotated[float, typer.Option(help="How many seconds to cover.")] = 4.0,
    start: Annotated[float, typer.Option(help="Start time in seconds.")] = 0.0,
    columns: Annotated[int, typer.Option(help="Frames per row.")] = 8,
    crop: Annotated[Optional[str], typer.Option(help="Show only the region X0,Y0,X1,Y1 (pixels) of each frame.")] = None,
) -> None:
    """Write a contact sheet (a grid of frames, each labelled with its time) of a video."""
    from lipstream.sinks.sheet import video_contact_sheet

    region = parse_crop(crop)
    path = video_contact_sheet(video, out, every=every, seconds=seconds, start_s=start, columns=columns, crop=region)
    console.print(f"[green]wrote[/] {path}")


@app.command()
@friendly
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    avatars: Annotated[Optional[Path], typer.Option(
        help="Folder of avatar packages to offer (uploads are prepared into it); 'default' is always there.")] = None,
    max_sessions: Annotated[int, typer.Option(help="Most concurrent real-time sessions; more are refused.")] = 8,
    token: Annotated[Optional[str], typer.Option(
        help="Bearer token required by the API and /ws (default: $LIPSTREAM_TOKEN; none = open).")] = None,
    renderer: Annotated[RendererChoice, typer.Option(
        help="Default renderer for sessions: auto is the selector's pick from `lipstream bench` profiles, else bank "
             "for videos, warp for photos.")] = RendererChoice.auto,
    profiles: Annotated[Optional[Path], typer.Option(
        help="Profiles for `auto` (default: the ones `lipstream bench` saved for this machine).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Render worker processes (default: one per CPU core).")] = None,
    idle_timeout: Annotated[float, typer.Option(help="Seconds without a message before a session is closed.")] = 60.0,
    max_upload_mb: Annotated[int, typer.Option(help="Largest upload (photo, video, audio) in MiB.")] = 64,
    max_image_mp: Annotated[float, typer.Option(
        help="Most megapixels in an uploaded photo or video frame (read from its header, before decoding).")] = 25.0,
    max_video_s: Annotated[float, typer.Option(
        help="Longest uploaded video avatar in seconds (from its header and packets, before decoding).")] = 120.0,
    max_audio_s: Annotated[float, typer.Option(
        help="Longest audio a render job takes, in seconds (from its header, and while decoding).")] = 600.0,
    job_timeout: Annotated[float, typer.Option(
        help="Seconds a prepare or render job may run before it is stopped (and its files removed).")] = 600.0,
    audio_rate: Annotated[float, typer.Option(
        help="Most audio a session may send, as a multiple of real time; faster clients are slowed down.")] = 4.0,
    log_level: Annotated[LogLevel, typer.Option(help="uvicorn log level.")] = LogLevel.info,
    avatar_store: Annotated[Optional[str], typer.Option(
        help="Read avatars by name from this URI prefix (s3://bucket/avatars, gs://..., file://...) instead of "
             "--avatars; each node fetches a package once into its disk cache.")] = None,
    avatar_cache_mib: Annotated[float, typer.Option(
        min=1, help="Memory each worker may hold avatars in (MiB); the least recently used go first.")] = 1024,
    ice_server: Annotated[Optional[list[str]], typer.Option(
        "--ice-server", help="WebRTC: a STUN or TURN server for /webrtc/offer's peers and the demo page, as URL or "
                             "URL,USERNAME,CREDENTIAL (repeat for more; none by default: host candidates only).")] = None,
    ray: Annotated[Optional[str], typer.Option(
        "--ray", help="Run as Ray Serve replicas: 'local' starts Ray here, else a cluster address.")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="With --ray: replicas to start with.")] = 2,
    sessions_per_replica: Annotated[int, typer.Option(
        min=1, help="With --ray: sessions each replica serves; more get SESSION_LIMIT.")] = 2,
    max_replicas: Annotated[Optional[int], typer.Option(
        min=1, help="With --ray: autoscale on open sessions between --replicas and this many replicas.")] = None,
    gpus_per_replica: Annotated[Optional[float], typer.Option(
        min=0, help="With --ray: GPUs each replica reserves (default: 1 for --renderer neural, else 0).")] = None,
) -> None:
    """Serve the demo page, the HTTP API, the WebSocket protocol (/ws), WebRTC (/webrtc/offer), /health and /metrics."""
    from lipstream.server.app import run_server

    if profiles is not None:
        os.environ["LIPSTREAM_PROFILES"] = str(profiles.resolve())  # read by the worker processes
    console.print(f"serving on [bold]http://{host}:{port}[/] (Ctrl+C stops)")
    if ray is not None:
        from lipstream.server.ray_serve import run_on_ray
        from lipstream.server.state import ServerSettings

        settings = ServerSettings(avatars_dir=avatars, token=token if token is not None else os.environ.get(
            "LIPSTREAM_TOKEN"), renderer=renderer.value, idle_timeout_s=idle_timeout,
            max_upload_bytes=max_upload_mb * 2**20, max_image_pixels=round(max_image_mp * 1e6),
            max_video_s=max_video_s, max_audio_s=max_audio_s, job_timeout_s=job_timeout, max_audio_rate=audio_rate,
            avatar_store=avatar_store, avatar_cache_mib=avatar_cache_mib)
        run_on_ray(ray, settings, host, port, replicas, sessions_per_replica, workers_per_replica=workers or 1,
                   max_replicas=max_replicas, num_gpus=gpus_per_replica)
        return
    run_server(host=host, port=port, avatars_dir=avatars, max_sessions=max_sessions,
               token=token if token is not None else os.environ.get("LIPSTREAM_TOKEN"), renderer=renderer.value,
               workers=workers, idle_timeout_s=idle_timeout, max_upload_bytes=max_upload_mb * 2**20,
               max_image_pixels=round(max_image_mp * 1e6), max_video_s=max_video_s, max_audio_s=max_audio_s,
               job_timeout_s=job_timeout, max_audio_rate=audio_rate, log_level=log_level.value,
               avatar_store=avatar_store, avatar_cache_mib=avatar_cache_mib, ice_servers=tuple(ice_server or ()))


@app.command()
@friendly
def batch(
    manifest: Annotated[Path, typer.Argument(help="JSONL, one clip a line: {\"id\", \"audio\", \"avatar\", ...render options}.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Folder or URI prefix (s3://, gs://) for ID.mp4 and results.jsonl.")],
    ray: Annotated[Optional[str], typer.Option(
        "--ray", help="Render on Ray actors: 'local' starts Ray here (this process renders too, "
                      "beside --workers - 1 actors), else a cluster address (ray://HOST:10001).")] = None,
    workers: Annotated[Optional[int], typer.Option(
        min=1, help="Processes or actors (default: one per CPU; with --ray local, this process is one).")] = None,
    avatars: Annotated[Optional[str], typer.Option(
        help="Folder or URI prefix the manifest's avatar names are read from (default: paths, URIs, 'default').")] = None,
    avatar_cache_mib: Annotated[float, typer.Option(min=1, help="Avatars each worker keeps in memory (MiB).")] = 1024,
    evaluate: Annotated[bool, typer.Option("--eval", help="Measure each output's A/V offset (offset_ms in its row).")] = False,
) -> None:
    """Render every clip of a MANIFEST; clips whose output exists are skipped. Exit 1 if any clip failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lipstream.batch import Destination, read_manifest, run_batch

    clips = read_manifest(manifest)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console)
    task = bar.add_task("rendering", total=len(clips))

    def progress(row: dict) -> None:
        bar.advance(task)
        if not row["ok"]:
            bar.console.print(f"[red]{row['id']}:[/] {row['error']}", highlight=False, soft_wrap=True)

    with bar:
        rows = run_batch(clips, out, workers=workers, ray_address=ray, avatars=avatars, cache_mib=avatar_cache_mib,
                         evaluate=evaluate, progress=progress)
    results = Destination(out).write_results(rows)
    failed = sum(not r["ok"] for r in rows)
    skipped = sum(bool(r.get("skipped")) for r in rows)
    console.print(f"{len(rows) - failed - skipped} rendered, {skipped} already there, {failed} failed; "
                  f"rows in {results}")
    if failed:
        raise typer.Exit(1)


@app.command("select")
@friendly
def select_(
    preset: Annotated[Optional[SelectPreset], typer.Option(
        help="Start from a preset (options below override it).")] = None,
    max_sync_ms: Annotated[Optional[float], typer.Option(help="Largest |A/V offset| (ms) measured by eval.")] = None,
    min_fps: Annotated[Optional[float], typer.Option(help="Fewest frames rendered per second.")] = None,
    max_model_mib: Annotated[Optional[float], typer.Option(help="Largest model file (MiB).")] = None,
    device: Annotated[Optional[SelectDevice], typer.Option(help="Where the backend runs.")] = None,
    quantization: Annotated[Optional[bool], typer.Option(
        "--quantization/--no-quantization", help="Allow INT8 models.")] = None,
    precision: Annotated[Optional[Precision], typer.Option(help="Preferred precision.")] = None,
    sync_weight: Annotated[Optional[float], typer.Option(
        help="0..1: weight of sync and quality against speed in the ranking.")] = None,
    profiles: Annotated[Optional[Path], typer.Option(
        help="profiles.json to read (default: the one `lipstream bench` saved for this machine).")] = None,
) -> None:
    """Which backend and precision to use for these constraints, from this machine's measured profiles, and why."""
    from rich.table import Table

    from lipstream.select import Constraints, choose, load_history, load_profiles, preset_constraints

    overrides = {"max_sync_ms": max_sync_ms, "min_fps": min_fps, "max_model_mib": max_model_mib,
                 "device": _value(device), "allow_quantization": quantization, "preferred_precision": _value(precision),
                 "sync_weight": sync_weight}
    constraints = preset_constraints(preset.value, **overrides) if preset else Constraints(
        **{k: v for k, v in overrides.items() if v is not None})
    profile_set = load_profiles(profiles)
    history = load_history()
    choice = choose(profile_set.profiles, constraints, history)
    table = Table(title=f"feasible backends, best first (profiles measured on {profile_set.machine.get('cpu', '?')})")
    for column in ("backend", "precision", "device", "driver", "fps", "p95 ms", "sync ms", "grade", "PSNR dB",
                   "model MiB", "in use", "score"):
        table.add_column(column)
    for p, score in choice.ranked:
        record = history.get(p.backend)
        table.add_row(p.backend, p.precision, p.device, p.driver, _fmt(p.fps, "{:.0f}"), _fmt(p.latency_p95_ms),
                      _fmt(p.sync_offset_ms, "{:+.0f}"), p.sync_grade or "-", _fmt(p.quality_psnr_db),
                      _fmt(p.model_mib), record.describe() if record else "-", f"{score:.2f}")
    out = Console(width=None if sys.stdout.isatty() else 160)
    out.print(table)
    out.print(f"[bold green]use[/] {choice.profile.backend} ({choice.profile.precision}, "
              f"{choice.profile.device}, driver {choice.profile.driver})")
    out.print(f"why: {choice.reason}", highlight=False)


def _fmt(value: float | None, pattern: str = "{:.1f}") -> str:
    return "-" if value is None else pattern.format(value)


@bench_app.callback(invoke_without_command=True)
@friendly
def bench_profiles(
    ctx: typer.Context,
    avatar: Annotated[str, typer.Option(
        help="Avatar to measure: 'default' (a photo: static, warp) or a video package (bank, and neural "
             "variants once trained).")] = "default",
    audio: Annotated[Optional[Path], typer.Option(help="Speech to render (default: the bundled clip).")] = None,
    merge: Annotated[Optional[Path], typer.Option(
        help="A profiles.json measured on another machine to add to the results.")] = None,
    gpu_results: Annotated[Optional[Path], typer.Option(
        help="Results of `python -m lipstream.bench.neural_runner run` on a GPU machine: adds fp16/bf16 rows.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help=(
        "Folder for profiles.json, report.md and plots (default: bench/results/profiles, and the profiles are "
        "installed as this machine's)."), show_default=False)] = None,
    install: Annotated[Optional[bool], typer.Option("--install/--no-install", help=(
        "Also make these the profiles `select` and `serve --renderer auto` use on this machine (default: only "
        "without --out)."), show_default=False)] = None,
) -> None:
    """Every renderer x driver x precision x device available: fps, p95 latency, memory, model size,
    held-out quality, sync offset and grade; the selector's pick per preset."""
    if ctx.invoked_subcommand is not None:
        return
    import json

    from lipstream.bench.profiles import gpu_profiles, merge_profiles, run_profiles, write_report
    from lipstream.select import ProfileSet, default_profiles_path, load_profiles

    install = out is None if install is None else install
    out = out or Path("bench/results/profiles")
    bar, callback = progress_bar("profiling backends")
    with bar:
        profile_set = run_profiles(avatar, audio, progress=callback)
    if merge:
        profile_set = merge_profiles(profile_set, load_profiles(merge))
    if gpu_results:
        rows = gpu_profiles(profile_set, json.loads(gpu_results.read_text()))
        profile_set = merge_profiles(profile_set, ProfileSet(rows, {}))
    installed = default_profiles_path()
    replacing = install and installed.exists()
    for path in write_report(profile_set, out, install=install):
        console.print(f"[green]wrote[/] {path}")
    if install:
        console.print(f"installed as this machine's profiles: {installed}" + (" (replacing the earlier ones)"
                                                                              if replacing else ""))
    else:
        console.print(f"this machine's profiles ({installed}) were left as they were; --install makes these them")
    console.print((out / "report.md").read_text(), highlight=False, soft_wrap=True)


@bench_app.command("render")
@friendly
def bench_render(
    seconds: Annotated[float, typer.Option(help="Length of the clip rendered end to end.")] = 60.0,
    frames: Annotated[int, typer.Option(help="Frames timed per renderer for render-only fps.")] = 250,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results JSON.")] = Path("bench/results/render.json"),
) -> None:
    """Per-stage ms per frame, fps per renderer, whole-render speed and peak memory."""
    from lipstream.bench.render import run_render_bench, write_results

    with console.status("benchmarking the renderers and the offline pipeline"):
        path = write_results(run_render_bench(seconds=seconds, frames=frames), out)
    console.print(path.read_text(), highlight=False)


@bench_app.command("drivers")
@friendly
def bench_drivers(
    media: Annotated[Path, typer.Option(help="A folder of real talking-face clips (*.mp4) with their audio.")],
    fps: Annotated[float, typer.Option(help="Video frame rate to compare at.")] = 25.0,
    preset: Annotated[str | None, typer.Option(
        help="Run the drivers live with this preset's look-ahead and context (default: offline, whole clips).")] = None,
    lookahead_ms: Annotated[Optional[float], typer.Option(min=0, max=5000, help="With --preset: this look-ahead instead.")] = None,
    context_ms: Annotated[Optional[float], typer.Option(min=0, max=10000, help="With --preset: this context instead.")] = None,
    driver: Annotated[Optional[list[DriverChoice]], typer.Option(
        help="Measure these drivers (repeatable; default: all offline, the preset's own with --preset).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results JSON.")] = Path("bench/results/driver-accuracy.json"),
) -> None:
    """How well each driver predicts the real mouth aperture of clips from their own audio."""
    from lipstream.bench.drivers import run_driver_accuracy, write_results
    from lipstream.session.presets import get_preset

    from dataclasses import replace

    from lipstream.errors import NotSupportedError

    if not preset and (lookahead_ms is not None or context_ms is not None):
        raise NotSupportedError("--lookahead-ms and --context-ms change a preset: give --preset too")
    live = get_preset(preset) if preset else None
    if live is not None:
        live = replace(live, lookahead_ms=live.lookahead_ms if lookahead_ms is None else lookahead_ms,
                       context_ms=live.context_ms if context_ms is None else context_ms)
    with console.status(f"measuring drivers on {media}"):
        result = run_driver_accuracy(media, fps, drivers=[d.value for d in driver] if driver else None, preset=live)
    write_results(result, out)
    console.print(f"[green]wrote[/] {out}")


@bench_app.command("landmarks")
@friendly
def bench_landmarks(
    media: Annotated[Path, typer.Option(help="A folder of real talking-face clips (*.mp4).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Results JSON.")] = Path("bench/results/landmarks.json"),
) -> None:
    """Landmark parity: the bundled litert face mesh against MediaPipe 0.10.21 (needs MediaPipe installed)."""
    from lipstream.bench.drivers import write_results
    from lipstream.bench.landmarks import run_landmark_bench

    with console.status(f"comparing face landmarks on {media}"):
        result = run_landmark_bench(media)
    write_results(result, out)
    console.print_json(data=result["summary"])
    console.print(f"[green]wrote[/] {out}")


@bench_app.command("sync")
@friendly
def bench_sync(
    media: Annotated[Path, typer.Option(help="A folder of real talking-face clips (*.mp4), assumed in sync.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Results JSON.")] = Path("bench/results/sync.json"),
) -> None:
    """The evaluator on real clips: tracking of injected shifts, absolute offsets, speed on 60 s."""
    from lipstream.bench.sync import run_sync_bench, write_results

    with console.status(f"measuring the sync evaluator on {media} (several minutes)"):
        write_results(run_sync_bench(media), out)
    console.print(f"[green]wrote[/] {out}")


@bench_app.command("neural")
@friendly
def bench_neural(
    avatars: Annotated[list[Path], typer.Argument(help="Trained video avatar packages (lipstream train).")],
    sheets: Annotated[Path, typer.Option(help="Write a sheet (real | bank | neural crops of the same held-out frames) per avatar into this folder.")] = Path("out/neural-sheets"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Results JSON.")] = Path("bench/results/neural-cpu.json"),
    speed_frames: Annotated[int, typer.Option(help="Frames timed per variant on the first avatar (0: no speed figures).")] = 100,
    speed_only: Annotated[bool, typer.Option(help="Only the speed figures (a timing run), no held-out quality.")] = False,
    offline_audio: Annotated[Optional[Path], typer.Option(help="Also time `lipstream render --renderer neural` of this audio on the first avatar (fresh process, default variant).")] = None,
) -> None:
    """Neural renderer on held-out frames (last fifth): fidelity and sharpness against bank, frame-to-frame change, CPU speed."""
    from lipstream.bench.neural import QUALITY_VARIANTS, SPEED_VARIANTS, run_neural_bench, write_results

    with console.status(f"measuring {len(avatars)} trained avatar(s)"):
        write_results(run_neural_bench(avatars, sheets, speed_frames, [] if speed_only else QUALITY_VARIANTS,
                                       SPEED_VARIANTS if speed_frames else [], offline_audio), out)
    console.print(f"[green]wrote[/] {out}")


@bench_app.command("load")
@friendly
def bench_load(
    seconds: Annotated[float, typer.Option(help="Streaming time per measurement.")] = 20.0,
    max_sessions: Annotated[int, typer.Option(help="Largest number of concurrent clients tried.")] = 8,
    drift_hours: Annotated[float, typer.Option(help="Length of the simulated session for the drift test.")] = 1.0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results JSON.")] = None,
    part: Annotated[Optional[list[str]], typer.Option(
        help="Run only these measurements (repeatable): latency, first_frame, seed002, cpu, capacity, slow_client, "
             "throttled, fuzz, drift.")
    ] = None,
) -> None:
    """Latency and time to first frame per preset, session capacity, a slow and a throttled client, fuzzed messages and drift of `serve`."""
    from lipstream.bench.load import PARTS, run_load_bench
    from lipstream.errors import NotSupportedError

    unknown = sorted(set(part or ()) - set(PARTS))
    if unknown:
        raise NotSupportedError(f"unknown --part {', '.join(unknown)}; choose from: {', '.join(PARTS)}")
    out = out or Path(f"bench/results/load-{os.cpu_count()}core.json")
    with console.status("load-testing a local server (several minutes)"):
        run_load_bench(out=out, seconds=seconds, max_sessions=max_sessions, drift_hours=drift_hours,
                       parts=tuple(part or PARTS))
    console.print(out.read_text(), highlight=False)


@bench_app.command("ray")
@friendly
def bench_ray(
    seconds: Annotated[float, typer.Option(help="Speech each of the 4 measured sessions streams.")] = 8.0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results JSON.")] = Path("bench/results/ray-serve.json"),
) -> None:
    """`serve --ray local`, 2 replicas of 2 sessions: 4 seed-002 clients (fps, sync, split), a 5th refused, replica cost."""
    from lipstream.bench.scale import run_ray_serve_bench

    with console.status("measuring `lipstream serve --ray local` (a few minutes)"):
        results = run_ray_serve_bench(out=out, seconds=seconds)
    console.print(out.read_text(), highlight=False)
    if not results["bar"]["holds"]:
        raise typer.Exit(1)


@bench_app.command("batch")
@friendly
def bench_batch(
    media: Annotated[Path, typer.Option(help="The eval media folder (two speech WAVs and the SadTalker portrait).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Results JSON.")] = Path("bench/results/batch-ray.json"),
) -> None:
    """8 held-out clips: one process one after another, then `batch --ray local`; wall times and each output's sync."""
    from lipstream.bench.batch import run_batch_bench

    with console.status("rendering 8 clips twice (a few minutes)"):
        results = run_batch_bench(media, out)
    console.print(out.read_text(), highlight=False)
    if not results["bar"]["holds"]:
        raise typer.Exit(1)


@bench_app.command("webrtc")
@friendly
def bench_webrtc(
    seconds: Annotated[float, typer.Option(help="Seconds of speech recorded.")] = 10.0,
    preset: Annotated[str, typer.Option(help="The session's latency preset.")] = "low",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results JSON.")] = None,
    keep: Annotated[Optional[Path], typer.Option(help="Keep the recording (WebM) in this folder.")] = None,
) -> None:
    """The demo page in headless Chromium over WebRTC (a speech WAV as its microphone): received fps and the recording's A/V offset."""
    from lipstream.bench.webrtc import run_webrtc_bench

    out = out or Path("bench/results/webrtc.json")
    with console.status("talking to a local server over WebRTC from headless Chromium"):
        results = run_webrtc_bench(out=out, seconds=seconds, preset=preset, keep=keep)
    console.print(out.read_text(), highlight=False)
    if not results["holds"]:
        raise typer.Exit(1)


@bench_app.command("webrtc-probe")
@friendly
def bench_webrtc_probe(
    seconds: Annotated[float, typer.Option(help="Seconds per recording.")] = 10.0,
    jitter_target_ms: Annotated[Optional[int], typer.Option(
        help="The page holds both received tracks at least this long (RTCRtpReceiver.jitterBufferTarget).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results JSON.")] = None,
) -> None:
    """A flash/tone test pattern through the server's WebRTC playout to headless Chromium: A/V offset of what it records, and the sender's timestamps."""
    from lipstream.bench.webrtc_probe import run_webrtc_probe

    out = out or Path("bench/results/webrtc-probe.json")
    with console.status("sending a test pattern to headless Chromium over WebRTC"):
        run_webrtc_probe(out=out, seconds=seconds, jitter_target_ms=jitter_target_ms)
    console.print(out.read_text(), highlight=False)


@bench_app.command("attack")
@friendly
def bench_attack(
    fuzz_messages: Annotated[Optional[int], typer.Option(
        help="Malformed messages to fuzz with (default: as many as `bench load`, 100,000).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results JSON.")] = None,
) -> None:
    """Issue 11's attacks (floods, unread pings, bombs, name theft, fuzzing) against `serve --token` on loopback."""
    from lipstream.bench.attack import run_attack_bench

    out = out or Path("bench/results/attack.json")
    with console.status("attacking a local server (several minutes)"):
        results = run_attack_bench(out=out, fuzz_messages=fuzz_messages)
    console.print(out.read_text(), highlight=False)
    if not results["holds"]:
        raise typer.Exit(1)


def _summary_line(summary) -> str:
    total_s = sum(summary.stage_ms.values()) / 1e3
    return (f"[green]wrote[/] {summary.path}: {summary.frames} frames, {summary.duration_s:.2f} s at "
            f"{summary.fps:g} fps, {summary.size[0]}x{summary.size[1]}, driver {summary.driver}, renderer "
            f"{summary.renderer}, {summary.duration_s / max(total_s, 1e-9):.1f}x real time")


def main() -> None:
    debug = os.environ.get("LIPSTREAM_LOG", "").lower() == "debug"
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_time=False, show_path=False)])
    app()


if __name__ == "__main__":
    main()
