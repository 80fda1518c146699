"""Choose a backend and precision from measured profiles under constraints, and say why.

A profile is feasible when its sync was measured (a renderer whose output can't be evaluated,
like `static`, is not a lip-sync backend) and it meets every hard constraint (sync, fps, model
size, device, quantisation). Feasible ones are ranked by
    score = sync_weight * fidelity + (1 - sync_weight) * speed (+ 0.05 for the preferred precision)
where fidelity is the mean of a sync score (1 at 0 ms, 0 at >= 120 ms |offset|, ITU-R BT.1359's
worst tolerance) and the held-out quality scaled over the feasible set (where two or more were
measured; a profile without one counts as the worst); speed is
log(fps through driver and renderer) scaled over the feasible set (1000 vs 100 fps matters
less than 25 vs 2.5). Given the backends' history (select/history.py), the score of a backend
with at least MIN_RECORDS outcomes is multiplied by its success rate, and the reason says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from lipstream.errors import NotSupportedError
from lipstream.select.history import BackendHistory
from lipstream.select.profiles import Profile

SYNC_SCALE_MS = 120.0
PRECISION_BONUS = 0.05


@dataclass(frozen=True)
class Constraints:
    """What the caller needs. None means no limit; device is "cpu", "gpu" or "any"."""

    max_sync_ms: float | None = None
    min_fps: float | None = None
    max_model_mib: float | None = None
    device: str = "any"
    allow_quantization: bool = True
    preferred_precision: str | None = None
    sync_weight: float = 0.5
    renderers: tuple[str, ...] | None = None  # only these renderers (e.g. what an avatar supports)


PRESETS: dict[str, Constraints] = {
    # the best-looking, best-synced output, whatever it costs
    "high_quality": Constraints(max_sync_ms=40, sync_weight=0.9),
    # live streaming at 25 fps with sync a viewer accepts
    "real_time": Constraints(max_sync_ms=80, min_fps=25, sync_weight=0.5),
    # a small CPU-only model that keeps up
    "mobile": Constraints(min_fps=25, max_model_mib=10, device="cpu", preferred_precision="int8", sync_weight=0.3),
    # full precision only, sync first
    "precision": Constraints(max_sync_ms=40, allow_quantization=False, preferred_precision="fp32", sync_weight=1.0),
}


@dataclass
class Choice:
    """The chosen profile, why, and every feasible profile ranked (best first) with its score."""

    profile: Profile
    score: float
    reason: str
    ranked: list[tuple[Profile, float]] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)


def preset_constraints(name: str, **overrides) -> Constraints:
    """A preset's constraints with some fields replaced (None values are ignored)."""
    if name not in PRESETS:
        raise NotSupportedError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def violation(profile: Profile, c: Constraints) -> str | None:
    """Why `profile` fails a hard constraint, or None if it meets them all."""
    if profile.sync_offset_ms is None:  # static, or a backend whose output could not be evaluated
        return "sync not measured"
    if c.renderers is not None and profile.renderer not in c.renderers:
        return "renderer not usable here"
    if c.device != "any" and profile.device != c.device:
        return f"not on {c.device}"
    if not c.allow_quantization and profile.quantized:
        return "quantised"
    if c.max_model_mib is not None and profile.model_mib > c.max_model_mib:
        return f"model over {c.max_model_mib:g} MiB"
    if c.min_fps is not None and (profile.pipeline_fps is None or profile.pipeline_fps < c.min_fps):
        return f"under {c.min_fps:g} fps"
    if c.max_sync_ms is not None and abs(profile.sync_offset_ms) > c.max_sync_ms:
        return f"sync over {c.max_sync_ms:g} ms"
    return None


def choose(profiles: list[Profile], constraints: Constraints,
           history: dict[str, BackendHistory] | None = None) -> Choice:
    """The best feasible profile; NotSupportedError saying what fell short if none is.
    `history`: each backend's record in real use (load_history()), weighing its score."""
    feasible, excluded = [], {}
    for profile in profiles:
        why = violation(profile, constraints)
        if why is None:
            feasible.append(profile)
        else:
            excluded[why] = excluded.get(why, 0) + 1
    if not feasible:
        raise NotSupportedError(_nothing_fits(profiles, constraints, excluded))
    history = {backend: h for backend, h in (history or {}).items() if h.counts}
    scores = [score * history[p.backend].ok_rate if p.backend in history else score
              for p, score in zip(feasible, _scores(feasible, constraints))]
    ranked = sorted(zip(feasible, scores), key=lambda pair: -pair[1])
    best, score = ranked[0]
    return Choice(best, score, _reason(ranked, constraints, excluded, history), ranked, excluded)


def _scores(feasible: list[Profile], c: Constraints) -> list[float]:
    log_fps = [math.log(max(p.pipeline_fps or 1.0, 1.0)) for p in feasible]
    low, high = min(log_fps), max(log_fps)
    psnrs = [p.quality_psnr_db for p in feasible if p.quality_psnr_db is not None]
    scores = []
    for p, lf in zip(feasible, log_fps):
        speed = (lf - low) / (high - low) if high > low else 1.0
        parts = [1.0 - min(abs(p.sync_offset_ms), SYNC_SCALE_MS) / SYNC_SCALE_MS]
        if len(psnrs) > 1 and max(psnrs) > min(psnrs):  # unmeasured quality counts as the worst
            parts.append((p.quality_psnr_db - min(psnrs)) / (max(psnrs) - min(psnrs))
                         if p.quality_psnr_db is not None else 0.0)
        fidelity = sum(parts) / len(parts)
        bonus = PRECISION_BONUS if c.preferred_precision and p.precision == c.preferred_precision else 0.0
        scores.append(c.sync_weight * fidelity + (1 - c.sync_weight) * speed + bonus)
    return scores


def _figures(p: Profile) -> str:
    bits = [f"{p.pipeline_fps:.0f} fps with the driver" if p.pipeline_fps is not None else "fps not measured"]
    if p.sync_offset_ms is not None:
        bits.append(f"sync {p.sync_offset_ms:+.0f} ms ({p.sync_grade})")
    if p.quality_psnr_db is not None:
        bits.append(f"{p.quality_psnr_db:.1f} dB")
    if p.model_mib:
        bits.append(f"{p.model_mib:.1f} MiB model")
    return ", ".join(bits)


def _reason(ranked: list[tuple[Profile, float]], c: Constraints, excluded: dict[str, int],
            history: dict[str, BackendHistory]) -> str:
    best, score = ranked[0]
    text = f"{best.label()}: {_figures(best)}; score {score:.2f} with sync weight {c.sync_weight:g}"
    if best.backend in history:
        text += f" (x success rate in use: {history[best.backend].describe()})"
    if len(ranked) > 1:
        runner, runner_score = ranked[1]
        text += f"; next: {runner.label()} ({_figures(runner)}; score {runner_score:.2f}"
        if runner.backend in history:
            text += f" x success rate in use: {history[runner.backend].describe()}"
        text += ")"
    if excluded:
        text += "; excluded: " + ", ".join(f"{n} {why}" for why, n in sorted(excluded.items()))
    return text


def _nothing_fits(profiles: list[Profile], c: Constraints, excluded: dict[str, int]) -> str:
    if not profiles:
        return "the profiles are empty: run `lipstream bench` on this machine"
    text = "no measured backend meets the constraints (" + ", ".join(f"{n} {w}" for w, n in excluded.items()) + ")"
    fastest = max(profiles, key=lambda p: p.pipeline_fps or 0.0)
    synced = [p for p in profiles if p.sync_offset_ms is not None]
    text += f"; fastest: {fastest.label()} ({_figures(fastest)})"
    if synced:
        best = min(synced, key=lambda p: abs(p.sync_offset_ms))
        text += f"; best sync: {best.label()} ({_figures(best)})"
    return text
