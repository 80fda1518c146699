"""`bank`: mouths from the avatar's own footage, chosen by mouth parameters, aligned and blended.

The base frame of output frame k is the avatar's footage looped back and forth (IdleMotion).
Its lower face is replaced by a bank entry (a canonical lower-face patch, lipstream.avatar.bank)
chosen by two costs:

- per frame: the weighted squared distance between the requested and the entry's mouth
  parameters (jaw opening weighs most), plus small costs for a head pose unlike the base
  frame's and for a source frame far from the base frame's, so footage that already shows the
  requested mouth keeps its own;
- per step: nothing while the entry's source frame advances as the base frame's does (the real
  footage, continuous), rising to `jump_cost` for a jump elsewhere.

Offline, `render(track)` minimises the sum over the whole track (Viterbi over the CANDIDATES
cheapest entries of each frame); live, `render_frame` chooses greedily with the same costs, so
a switch must pay for itself (hysteresis). The chosen patch is warped onto the base frame's pose
(one warpAffine of a small patch), its colour scaled per channel to the base frame's skin, and
blended with a feathered mask.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from lipstream.avatar.bank import MASK_SCALE, PATCH_SIZE, PX_PER_EYE
from lipstream.avatar.package import AvatarPackage
from lipstream.errors import NotSupportedError
from lipstream.face import align
from lipstream.motion.params import JAW_OPEN, LIP_CLOSE, LIP_SPREAD, TEETH, MouthTrack
from lipstream.render.base import Renderer, register
from lipstream.render.compose import paste_region
from lipstream.render.idle import IdleMotion

# Weights of squared parameter differences (parameter units).
JAW_WEIGHT = 1.0
SPREAD_WEIGHT = 0.15
TEETH_WEIGHT = 0.05
# Weight of the mean squared difference of head pose (eye distances, see bank `frame_pose`).
POSE_WEIGHT = 8.0
# Cost of a source frame SOURCE_SPAN or more frames away from the base frame's, less nearer.
SOURCE_COST = 0.002
SOURCE_SPAN = 12
# Cost of a jump JUMP_SPAN or more frames away from where the footage would continue, less nearer.
JUMP_COST = 0.008
JUMP_SPAN = 3
CANDIDATES = 24
GAIN_RANGE = (0.8, 1.25)
# How far (eye distances) an entry's chin may reach below the base frame's mask.
CHIN_DROP = 0.4
# Largest shift (eye distances) that lines an entry's cheeks up with the base frame's.
MAX_SHIFT = 0.1
_CHUNK = 256


@register
class BankRenderer(Renderer):
    name = "bank"

    def __init__(self, avatar: AvatarPackage, *, jump_cost: float = JUMP_COST, **options):
        super().__init__(avatar, **options)
        if avatar.kind != "video" or "patches" not in avatar.bank:
            raise NotSupportedError(
                "the bank renderer needs a video avatar (it reuses mouths from the person's own footage); "
                "use the warp renderer for a photo, or prepare a few seconds of video of the person talking"
            )
        bank = avatar.bank
        self.idle = IdleMotion(avatar, still=self.still, seed=self.seed)
        self.jump_cost = jump_cost
        self.source = np.asarray(bank["source"], np.int64)
        self._patches = bank["patches"]
        self._masks = bank["frame_mask"]
        self._colour = np.asarray(bank["frame_colour"], np.float32)
        self._anchor = np.asarray(bank["frame_anchor"], np.float64)
        self._template = np.asarray(bank["template"], np.float64)
        reach = int(np.ceil(CHIN_DROP * PX_PER_EYE / MASK_SCALE))
        self._below = np.zeros((2 * reach + 1, 1), np.uint8)
        self._below[: reach + 1] = 1  # dilating with it extends a mask straight down
        self._features = _features(np.asarray(bank["params"], np.float32))
        pose = np.asarray(bank["frame_pose"], np.float32)
        pose = pose.reshape(len(pose), -1)
        self._pose = pose * np.sqrt(POSE_WEIGHT / pose.shape[1])  # squared distance = weighted mean
        self._entry_pose = self._pose[self.source]
        self._last: tuple[int, int, int] | None = None  # (k, base source frame, entry) streamed last

    def plan(self, track: MouthTrack, first: int = 0) -> np.ndarray:
        """The bank entry (T,) int64 for frames first.. of `track`: the path of least total cost."""
        bases = np.array([self.idle.source_index(first + i) for i in range(len(track))], np.int64)
        if not len(bases):
            return bases
        candidates, unary = self._candidates(bases, track.values)
        steps = np.diff(bases)
        total = unary[0]
        back = np.zeros(candidates.shape, np.int64)
        columns = np.arange(candidates.shape[1])
        for k in range(1, len(bases)):
            step = self._step_cost(candidates[k - 1][:, None], candidates[k][None, :], steps[k - 1])
            scores = total[:, None] + step
            back[k] = scores.argmin(axis=0)
            total = scores[back[k], columns] + unary[k]
        path = np.empty(len(bases), np.int64)
        path[-1] = total.argmin()
        for k in range(len(bases) - 1, 0, -1):
            path[k - 1] = back[k, path[k]]
        return candidates[np.arange(len(bases)), path]

    def render(self, track: MouthTrack, first: int = 0) -> Iterator[np.ndarray]:
        """Frames first.. of `track`, with the bank entries planned over the whole track first."""
        for i, entry in enumerate(self.plan(track, first)):
            yield self._compose(first + i, int(entry))

    def render_frame(self, k: int, params: np.ndarray) -> np.ndarray:
        base = self.idle.source_index(k)
        cost = self._unary(np.array([base]), np.asarray(params, np.float32)[None])[0]
        if self._last is not None and self._last[0] == k - 1:
            _, last_base, last_entry = self._last
            cost += self._step_cost(last_entry, np.arange(len(cost)), base - last_base)
        entry = int(cost.argmin())
        self._last = (k, base, entry)
        return self._compose(k, entry)

    def _unary(self, bases: np.ndarray, params: np.ndarray) -> np.ndarray:
        """Per-frame cost (T, M) of every entry for base source frames (T,) and parameters (T, 4)."""
        wanted = _features(params)
        cost = _squared_distances(wanted, self._features)
        cost += _squared_distances(self._pose[bases], self._entry_pose)
        cost += SOURCE_COST * np.minimum(np.abs(self.source[None] - bases[:, None]) / SOURCE_SPAN, 1.0)
        return cost

    def _candidates(self, bases: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The CANDIDATES cheapest entries of each frame (T, C) and their per-frame costs (T, C)."""
        count = min(CANDIDATES, len(self.source))
        entries, costs = [], []
        for start in range(0, len(bases), _CHUNK):
            unary = self._unary(bases[start : start + _CHUNK], params[start : start + _CHUNK])
            best = np.argpartition(unary, count - 1, axis=1)[:, :count]
            entries.append(best)
            costs.append(np.take_along_axis(unary, best, axis=1))
        return np.concatenate(entries), np.concatenate(costs)

    def _step_cost(self, before: np.ndarray | int, after: np.ndarray | int, base_step: int) -> np.ndarray:
        """Cost of entry `before` at one frame then `after` at the next, while the base moved base_step."""
        gap = np.abs(self.source[after] - self.source[before] - base_step)
        return self.jump_cost * np.minimum(gap / JUMP_SPAN, 1.0)

    def _compose(self, k: int, entry: int) -> np.ndarray:
        """Output frame k: the base frame with the entry's lower face warped, colour-matched, blended."""
        frame, landmarks, base = self.idle.source(k)
        to_frame = align.invert(align.to_canonical(landmarks, self._template))
        box = _footprint(to_frame, frame.shape)
        x0, y0, x1, y1 = box
        size = (int(x1 - x0), int(y1 - y0))
        to_box = to_frame.copy()
        to_box[:, 2] -= box[:2]
        source = self.source[entry]
        # Move the entry's lower face so its cheeks sit where the base frame's are.
        shift = np.clip(self._anchor[base] - self._anchor[source], -MAX_SHIFT * PX_PER_EYE, MAX_SHIFT * PX_PER_EYE)
        to_patch = to_box.copy()
        to_patch[:, 2] += to_box[:, :2] @ shift
        patch = cv2.warpAffine(
            self._patches[entry], to_patch, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        # The entry's own lower face may reach lower than the base's (an opening jaw), not wider.
        mask = self._masks[base]
        mask = np.maximum(mask, np.minimum(self._masks[source], cv2.dilate(mask, self._below)))
        alpha = cv2.warpAffine(mask, _from_mask_pixels(to_box), size, flags=cv2.INTER_LINEAR)
        gain = np.clip(self._colour[base] / np.maximum(self._colour[source], 1.0), *GAIN_RANGE)
        lut = np.clip(np.arange(256, dtype=np.float32)[:, None] * gain + 0.5, 0, 255).astype(np.uint8)
        patch = cv2.LUT(patch, lut.reshape(256, 1, 3))
        return self.idle.animate(k, paste_region(frame, patch, box, alpha[..., None].astype(np.float32) / 255.0))


def _features(params: np.ndarray) -> np.ndarray:
    """Parameters (T, 4) as weighted features (T, 3) whose squared distance is the parameter cost."""
    jaw = params[:, JAW_OPEN] * (1.0 - params[:, LIP_CLOSE])
    return np.stack(
        [
            np.sqrt(JAW_WEIGHT) * jaw,
            np.sqrt(SPREAD_WEIGHT) * params[:, LIP_SPREAD],
            np.sqrt(TEETH_WEIGHT) * params[:, TEETH],
        ],
        axis=-1,
    ).astype(np.float32)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (len(a), len(b)) between rows of a and b."""
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0.0)


def _footprint(to_frame: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Box (x0, y0, x1, y1) int64 of the canonical patch in a frame of `shape`, clipped to it."""
    width, height = PATCH_SIZE
    corners = align.apply(to_frame, np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64))
    x0, y0 = np.clip(np.floor(corners.min(axis=0)), 0, [shape[1] - 1, shape[0] - 1]).astype(np.int64)
    x1 = min(int(np.ceil(corners[:, 0].max())), shape[1])
    y1 = min(int(np.ceil(corners[:, 1].max())), shape[0])
    return np.array([x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)], np.int64)


def _from_mask_pixels(to_box: np.ndarray) -> np.ndarray:
    """`to_box` (canonical pixels -> box pixels) for the 1/MASK_SCALE canonical mask's pixels."""
    linear = to_box[:, :2] * MASK_SCALE
    # Pixel u of the mask covers canonical pixels MASK_SCALE*u .. MASK_SCALE*u + MASK_SCALE - 1.
    shift = to_box[:, 2] + to_box[:, :2] @ np.full(2, (MASK_SCALE - 1) / 2)
    return np.concatenate([linear, shift[:, None]], axis=1)
