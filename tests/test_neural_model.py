"""The neural renderer's training, export, variants and package checks, on a tiny network and a
short talking video the test makes from the bundled portrait (see test_bank)."""

import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import write_mp4

from lipstream.avatar.package import load_package
from lipstream.avatar.prepare import prepare
from lipstream.errors import BadAvatarError, NotSupportedError
from lipstream.motion.params import MouthTrack
from lipstream.render.base import create_renderer
from lipstream.render.warp import WarpRenderer

FPS = 25
SIZE = 256
TINY = 64


@pytest.fixture(scope="module")
def talking(tmp_path_factory, default_avatar):
    """A 2 s video avatar: the portrait opening and closing its mouth (1.3 Hz), spreading it (0.5 Hz)."""
    t = np.arange(50) / FPS
    jaw = 0.5 - 0.5 * np.cos(2 * np.pi * 1.3 * t)
    spread = 0.5 * np.sin(2 * np.pi * 0.5 * t)
    track = MouthTrack(np.stack([jaw, spread, np.zeros_like(jaw), np.clip(2 * jaw, 0, 1)], axis=-1), FPS)
    frames = [cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
              for f in WarpRenderer(default_avatar, still=True).render(track)]
    folder = tmp_path_factory.mktemp("neural")
    return load_package(prepare(write_mp4(folder / "talking.mp4", frames, FPS), folder / "talking"))


@pytest.fixture(scope="module")
def dataset(talking):
    from lipstream.neural.dataset import build_dataset

    return build_dataset(talking, sizes=(TINY,))


@pytest.fixture(scope="module")
def trained(dataset):
    torch = pytest.importorskip("torch")
    from lipstream.neural.model import state_to_numpy
    from lipstream.neural.train import TrainConfig, Trainer

    torch.set_num_threads(2)
    trainer = Trainer(dataset, TrainConfig(arch="tiny", steps=150, batch=8, lr=3e-3, device="cpu", eval_every=150))
    summary = trainer.train()
    return summary, state_to_numpy(trainer.model)


@pytest.fixture(scope="module")
def installed(tmp_path_factory, talking, dataset, trained):
    """A copy of the talking avatar with the tiny network and its ONNX variants stored in it."""
    from lipstream.neural.conditioning import Conditioner
    from lipstream.neural.dataset import read_meta
    from lipstream.neural.geometry import CropGeometry
    from lipstream.neural.model import CONFIGS
    from lipstream.neural.store import calibration_inputs, install

    path = tmp_path_factory.mktemp("installed") / "talking"
    shutil.copytree(talking.path, path)
    meta = read_meta(dataset)
    summary, weights = trained
    conditioner = Conditioner(talking, CropGeometry.from_dict(meta["geometry"]), TINY, meta["reference"])
    install(path, weights, CONFIGS["tiny"].to_dict(), meta, summary, calibration_inputs(talking, conditioner, 16))
    return load_package(path)


def test_dataset_holds_the_split_and_sketches_the_lip_model_redraws(talking, dataset):
    from lipstream.neural.conditioning import Conditioner
    from lipstream.neural.dataset import read_meta
    from lipstream.neural.geometry import CropGeometry, draw_sketch

    meta = read_meta(dataset)
    assert meta["heldout_start"] == 40 and meta["reference"] < 40
    assert dataset[f"crops_{TINY}"].shape == (50, TINY, TINY, 3)
    hidden = dataset[f"hidden_{TINY}"]
    assert 0.1 < (hidden > 127).mean() < 0.6  # the lower face, not the whole crop
    # Render time draws from mouth parameters through the same lip model: identical sketches.
    c = Conditioner(talking, CropGeometry.from_dict(meta["geometry"]), TINY, meta["reference"])
    for i in (3, 27, 45):
        np.testing.assert_allclose(c.controls(i, c.fitted_params(i)), dataset["controls"][i], atol=1e-3)
        sketch = draw_sketch(c.controls(i, dataset["params"][i]), c.transforms[i], TINY)
        assert np.abs(sketch.astype(int) - dataset[f"sketch_{TINY}"][i]).max() <= 1
    # An open mouth fills the opening channel, a closed one hardly.
    jaw = dataset["params"][:, 0]
    opened = dataset[f"sketch_{TINY}"][:, 1].reshape(50, -1).sum(axis=1)
    assert np.corrcoef(opened, jaw)[0, 1] > 0.8, (opened, jaw)


def test_jpeg_packed_dataset_loads_close_to_raw(talking, tmp_path):
    from lipstream.neural.dataset import build_dataset, load_dataset, save_dataset

    packed = load_dataset(save_dataset(build_dataset(talking, sizes=(TINY,), jpeg_quality=95), tmp_path / "d.npz"), TINY)
    raw = load_dataset(build_dataset(talking, sizes=(TINY,)), TINY)
    assert packed["crops"].shape == raw["crops"].shape == (50, TINY, TINY, 3)
    assert np.abs(packed["crops"].astype(float) - raw["crops"]).mean() < 3


def test_tiny_training_learns_and_comes_near_the_real_mouth_it_moves(trained):
    """The warp head's reference is the training frame with the nearest mouth (references.py):
    on this made-up clip, whose mouths repeat, copying it is already close to the truth, and the
    tiny network (150 steps) must come near it."""
    summary, _ = trained
    losses = [h["loss"] for h in summary["history"]]
    assert losses[-1] < 0.6 * losses[0]
    assert summary["heldout_psnr_db"] > summary["copy_reference_psnr_db"] - 3.0


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_training_resumes_from_its_checkpoint(dataset, tmp_path, device):
    torch = pytest.importorskip("torch")
    from lipstream.neural.train import TrainConfig, Trainer

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")  # the RNG state must come back to the CPU there (it once did not)
    config = TrainConfig(arch="tiny", steps=6, batch=2, device=device, eval_every=6, checkpoint_every=3)
    Trainer(dataset, config, tmp_path).train(until=3)  # stopped half way, as by an interruption
    resumed = Trainer(dataset, config, tmp_path)
    assert resumed.step == 3
    assert resumed.train()["steps"] == 6 and (tmp_path / "weights.npz").exists()
    with pytest.raises(NotSupportedError, match="another configuration"):
        Trainer(dataset, TrainConfig(arch="tiny", steps=9, batch=2, device=device), tmp_path)


def test_onnx_export_matches_pytorch(trained, tmp_path):
    pytest.importorskip("torch")
    import onnxruntime as ort

    from lipstream.neural.export import export_onnx, torch_output
    from lipstream.neural.model import CONFIGS

    _, weights = trained
    arch = CONFIGS["tiny"].to_dict()
    path = export_onnx(weights, arch, tmp_path / "tiny.onnx")
    x = np.random.default_rng(0).random((3, 9, TINY, TINY), dtype=np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, torch_output(weights, arch, x), atol=2e-4)


def test_every_cpu_variant_loads_and_renders(installed, talking):
    from lipstream.neural.geometry import hidden_region_pixels

    params = np.array([0.8, 0.0, 0.0, 1.0], np.float32)
    frames = {}
    for variant in ("fp32", "int8-static", "int8-dynamic"):
        r = create_renderer("neural", installed, arch="tiny", variant=variant, still=True)
        assert r.variant == f"tiny/{variant}"
        frames[variant] = r.render_frame(10, params)
        assert frames[variant].shape == (SIZE, SIZE, 3) and frames[variant].dtype == np.uint8
    c = r.conditioner
    inside = hidden_region_pixels(c.geometry, c.transforms[10], c.size, (SIZE, SIZE))
    base = np.asarray(installed.frames[10])
    changed = np.any(frames["fp32"] != base, axis=-1)
    near = cv2.dilate(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # resampling at the edge
    assert changed[inside].mean() > 0.5 and not changed[~near].any()  # only the lower face is redrawn
    for variant in ("int8-static", "int8-dynamic"):
        diff = frames[variant][inside].astype(float) - frames["fp32"][inside]
        assert 10 * np.log10(255**2 / np.mean(diff**2)) > 25  # close to its fp32 model
    # Rendering a whole track in batches gives what frame by frame gives.
    # (fp32; dynamic INT8 quantises activations by the batch's range, so a batch differs slightly.)
    r = create_renderer("neural", installed, arch="tiny", variant="fp32", still=True)
    track = MouthTrack(np.tile(params, (3, 1)), FPS)
    batched = list(r.render(track))[2].astype(int)
    assert np.abs(batched - r.render_frame(2, params)).max() <= 1
    with pytest.raises(NotSupportedError, match="GPU"):
        create_renderer("neural", installed, arch="tiny", variant="fp16")


def test_a_track_of_several_batches_renders_as_frame_by_frame(installed):
    """render(track) prepares the next batch on a worker thread while it composites this one:
    the frames still come in order, each with its own mouth and reference, as render_frame
    makes them one at a time (within the rounding of a batched network run); stopping early
    leaves no thread behind."""
    import threading

    from lipstream.render.neural import BATCH

    t = np.arange(2 * BATCH + 5) / FPS
    jaw = 0.5 - 0.5 * np.cos(2 * np.pi * 1.1 * t)
    track = MouthTrack(np.stack([jaw, np.zeros_like(jaw), np.zeros_like(jaw), np.clip(2 * jaw, 0, 1)], -1)
                       .astype(np.float32), FPS)
    batched = list(create_renderer("neural", installed, arch="tiny", variant="fp32", still=True).render(track, first=3))
    single = create_renderer("neural", installed, arch="tiny", variant="fp32", still=True)
    assert len(batched) == len(track)
    for n, frame in enumerate(batched):
        assert np.abs(frame.astype(int) - single.render_frame(3 + n, track.values[n])).max() <= 1
    frames = create_renderer("neural", installed, arch="tiny", variant="fp32", still=True).render(track)
    next(frames)
    frames.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("neural-batch")]


def test_rendering_an_onnx_variant_needs_no_torch(installed, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails, as without torch installed
    for name in [m for m in sys.modules if m.startswith("lipstream.neural.") or m == "lipstream.render.neural"]:
        monkeypatch.delitem(sys.modules, name)
    r = create_renderer("neural", installed, arch="tiny", variant="int8-static", still=True)
    assert r.render_frame(3, np.array([0.5, 0.0, 0.0, 0.5], np.float32)).shape == (SIZE, SIZE, 3)
    assert create_renderer("neural", installed, still=True).variant == "tiny/int8-static"  # the default


def test_the_default_variant_is_fp16_on_a_cuda_gpu_and_static_int8_without(monkeypatch):
    """Offline and live rendering take the GPU when torch sees one (full network, or lite when
    that is all the package has), else the lite network in static INT8 on the CPU."""
    from types import SimpleNamespace

    from lipstream.neural import runtime

    files = {"weights": {}, "fp32": {}, "int8-static": {}}
    both = SimpleNamespace(models={"neural": {"full": {"files": files}, "lite": {"files": files}}})
    lite = SimpleNamespace(models={"neural": {"lite": {"files": files}}})
    monkeypatch.setattr(runtime, "cuda_available", lambda: True)
    assert runtime.default_choice(both) == ("full", "fp16")
    assert runtime.default_choice(lite) == ("lite", "fp16")
    monkeypatch.setattr(runtime, "cuda_available", lambda: False)
    assert runtime.default_choice(both) == ("lite", "int8-static")
    assert runtime.default_choice(lite) == ("lite", "int8-static")


def test_refuses_an_avatar_without_a_trained_model(talking, default_avatar):
    for avatar in (talking, default_avatar):
        with pytest.raises(NotSupportedError, match="lipstream train"):
            create_renderer("neural", avatar)


def test_train_refuses_a_photo(default_avatar):
    from lipstream.neural.fit import check_trainable

    with pytest.raises(BadAvatarError, match="video"):
        check_trainable(default_avatar)


def _fake_models(path, content=b"x" * 100):
    """A package copy with a hand-made models section naming one file (no torch needed)."""
    (path / "models" / "neural-lite").mkdir(parents=True)
    (path / "models" / "neural-lite" / "fp32.onnx").write_bytes(content)
    from lipstream.avatar.package import file_sha256

    manifest = json.loads((path / "manifest.json").read_text())
    file = path / "models" / "neural-lite" / "fp32.onnx"
    manifest["models"] = {"version": 1, "neural": {"lite": {
        "arch": {"name": "lite", "size": 128, "widths": [8, 16, 32, 48, 64]}, "geometry": {}, "reference": 0,
        "trained": {}, "files": {"fp32": {"path": "models/neural-lite/fp32.onnx", "bytes": len(content),
                                          "sha256": file_sha256(file)}}}}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_a_corrupt_or_missing_model_file_is_a_clear_bad_avatar_error(talking, tmp_path):
    from lipstream.neural.runtime import load_model

    path = tmp_path / "pkg"
    shutil.copytree(talking.path, path)
    manifest = _fake_models(path)
    file = path / "models" / "neural-lite" / "fp32.onnx"
    # Not an ONNX model although its checksum matches: refused when loaded.
    with pytest.raises(BadAvatarError, match="can't be loaded.*lipstream train"):
        load_model(load_package(path), "lite", "fp32")
    # Same size, other bytes: checksum.
    file.write_bytes(b"y" * 100)
    with pytest.raises(BadAvatarError, match="corrupt \\(checksum mismatch\\)"):
        load_model(load_package(path), "lite", "fp32")
    # Truncated: refused on load of the package.
    file.write_bytes(b"y" * 10)
    with pytest.raises(BadAvatarError, match="has 10 bytes, not 100"):
        load_package(path)
    file.unlink()
    with pytest.raises(BadAvatarError, match="missing"):
        load_package(path)
    manifest["models"]["version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BadAvatarError, match="another version"):
        load_package(path)


def test_weights_packed_by_the_gpu_bench_are_found_by_avatar_name(tmp_path):
    from lipstream.neural.fit import weights_for

    np.savez(tmp_path / "a.npz", **{"full/ann/w": np.ones(2), "lite/ann/w": np.zeros(2), "lite/bob/w": np.ones(3)})
    np.savez(tmp_path / "b.npz", w=np.full(4, 7.0))
    assert weights_for([tmp_path / "a.npz"], "lite", "bob")["w"].shape == (3,)
    assert weights_for([tmp_path / "a.npz"], "full", "bob") is None
    assert weights_for(tmp_path / "b.npz", "full", "x")["w"][0] == 7.0


def test_cli_train_refuses_a_photo_with_the_fix(default_avatar, portrait_path):
    from typer.testing import CliRunner

    from lipstream.cli import app

    runner = CliRunner()
    for target in (default_avatar.path, portrait_path):
        result = runner.invoke(app, ["train", str(target)])
        assert result.exit_code == 4
        assert "video" in result.output or "prepare" in result.output


def test_cli_train_end_to_end_on_cpu(talking, tmp_path):
    """`lipstream train` on a 2 s video avatar, a few steps of the lite network on the CPU: the
    package then holds the network and its INT8 variants, and the neural renderer draws with it."""
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from lipstream.cli import app

    target = tmp_path / "talking"
    shutil.copytree(talking.path, target)
    result = CliRunner().invoke(app, ["train", str(target), "--arch", "lite", "--steps", "3", "--batch", "2",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "trained lite" in result.output
    package = load_package(target)
    entry = package.models["neural"]["lite"]
    assert {"fp32", "int8-static", "int8-dynamic"} <= set(entry["files"])
    assert entry["trained"]["steps"] == 3
    frame = create_renderer("neural", package, arch="lite", variant="fp32").render_frame(0, np.zeros(4, np.float32))
    assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8


def test_training_references_are_near_mouths_from_another_moment():
    from lipstream.neural.references import ReferencePicker, training_references

    t = np.arange(60)
    params = np.stack([0.5 + 0.5 * np.sin(t / 3.0), np.zeros(60), np.zeros(60), np.zeros(60)], -1)
    table = training_references(params, split=48, gap=12, choices=3)
    assert table.shape == (60, 3) and table.max() < 48
    assert (np.abs(table - t[:, None]) >= 12).all()
    jaw = params[:, 0]
    assert (np.abs(jaw[table[:, 0]] - jaw) < 0.1).all()  # a mouth open as much
    poses = np.zeros((48, 2), np.float32)
    picker = ReferencePicker(np.arange(48), params[:48], poses)
    first = picker.pick(params[50], np.zeros(2))
    assert abs(jaw[first] - jaw[50]) < 0.05
    assert picker.pick(params[50] + [0.01, 0, 0, 0], np.zeros(2)) == first  # held: no switching for a small change


def test_the_reference_is_the_near_mouth_whose_head_pose_is_nearest():
    from lipstream.neural.references import ReferencePicker

    # frames 0-3 have the same mouth; frame 2 alone is turned like the frame drawn into
    params = np.array([[0.5, 0, 0, 0]] * 4 + [[0.0, 0, 0, 0]] * 4, np.float32)
    poses = np.zeros((8, 2), np.float32)
    poses[:4, 0] = [0.3, -0.2, 0.1, 0.25]
    picker = ReferencePicker(np.arange(8), params, poses)
    assert picker.pick(params[0], np.array([0.12, 0.0])) == 2
    assert picker.pick(params[0], np.array([-0.2, 0.0])) == 2  # held while its mouth stays among the nearest
    assert picker.pick(params[4], np.array([-0.2, 0.0])) in range(4, 8)  # another mouth: picked afresh
    assert picker.pick(params[0], np.array([-0.2, 0.0])) == 1


def test_warp_head_moves_the_reference_crop_by_its_flow():
    torch = pytest.importorskip("torch")
    from lipstream.neural.model import build_model, compose_parts

    from lipstream.neural.layout import MAX_FLOW

    model = build_model("tiny")
    reference = torch.rand(1, 3, TINY, TINY)
    parts = torch.full((1, 6, TINY, TINY), 0.5)  # flow 0.5 = no displacement
    parts[:, 3] = 0.5 + 0.5 * 2.0 / (MAX_FLOW * TINY)  # every pixel takes the reference 2 pixels to its right
    parts[:, 5] = 1.0  # all from the moved reference
    moved = compose_parts(parts, reference, model.grid)
    torch.testing.assert_close(moved[..., :-2], reference[..., 2:], atol=1e-5, rtol=0)
    parts[:, 5] = 0.0  # all from the colour
    parts[:, :3] = 0.25
    assert torch.allclose(compose_parts(parts, reference, model.grid), torch.full_like(reference, 0.25))
    x = torch.rand(2, 9, TINY, TINY)
    assert model.parts(x).shape == (2, 6, TINY, TINY) and model(x).shape == (2, 3, TINY, TINY)


def test_warp_parts_take_the_reference_frame_at_full_resolution():
    """Composed at the frame's resolution, the moved reference keeps the frame's own texture,
    finer than the crop's pixels (here 4 frame pixels per crop pixel)."""
    from lipstream.bench.neural_quality import laplacian_variance
    from lipstream.neural.geometry import warp_back_parts
    from lipstream.neural.layout import MAX_FLOW

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    to_crop = np.array([[0.25, 0, 0], [0, 0.25, 0]])  # frame -> 64 px crop
    parts = np.full((6, TINY, TINY), 0.5, np.float32)
    parts[5] = 1.0
    parts[3] = 0.5 + 0.5 / (MAX_FLOW * TINY)  # one crop pixel = 4 frame pixels to the right
    blend = np.ones((TINY, TINY), np.float32)
    patch, box, alpha = warp_back_parts(parts, to_crop, blend, frame.shape, frame, to_crop)
    assert tuple(box[:2]) == (0, 0)
    np.testing.assert_array_equal(patch[8:200, 8:200], frame[8:200, 12:204])
    assert alpha[8:200, 8:200].min() == 1.0
    parts[5] = 0.0
    parts[:3] = 0.5
    soft, _, _ = warp_back_parts(parts, to_crop, blend, frame.shape, frame, to_crop)
    region = np.ones(soft.shape[:2], bool)
    assert laplacian_variance(soft, region) < 1.0 < laplacian_variance(patch, region)


def _noise_texture(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(128 + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)


def test_texture_gives_a_soft_drawing_the_footages_texture_and_leaves_a_sharp_one_alone():
    """geometry.Texture: a soft drawing gets the moved reference's fine texture back up to the
    real frame's sharpness; a drawing as textured as the real frame stays (nearly) itself."""
    import cv2

    from lipstream.bench.neural_quality import laplacian_variance
    from lipstream.neural.geometry import Sharpness, Texture

    real = _noise_texture(1)
    soft = cv2.GaussianBlur(real, (0, 0), 2.0)
    where = np.ones((96, 96), np.float32)
    region = np.ones((96, 96), bool)
    out = Texture().transfer(soft, real, Sharpness.of(real, region), where)
    assert laplacian_variance(soft, region) < 0.2 * laplacian_variance(real, region)
    assert 0.95 < laplacian_variance(out, region) / laplacian_variance(real, region) < 1.05
    sharp = _noise_texture(3)  # another texture of the same strength: nothing is missing
    kept = Texture().transfer(sharp, real, Sharpness.of(real, region), where)
    assert np.corrcoef(kept.ravel().astype(float), sharp.ravel().astype(float))[0, 1] > 0.97
    assert 0.95 < laplacian_variance(kept, region) / laplacian_variance(real, region) < 1.05


def test_texture_counts_the_reference_texture_the_drawing_already_holds():
    """The warp head's drawing mixes the moved reference in, so its fine texture shares edges
    with the reference's: what is added on top brings the result to the footage's sharpness,
    not past it (adding as if the two were unrelated overshoots, 1.7x here)."""
    import cv2

    from lipstream.bench.neural_quality import laplacian_variance
    from lipstream.neural.geometry import Sharpness, Texture, added_weight

    real = _noise_texture(2)
    soft = cv2.GaussianBlur(real, (0, 0), 2.0).astype(np.float32)
    drawn = np.clip(soft + 0.4 * (real - soft) + 0.5, 0, 255).astype(np.uint8)  # 0.4 of the real texture
    region = np.ones((96, 96), bool)
    out = Texture().transfer(drawn, real, Sharpness.of(real, region), np.ones((96, 96), np.float32))
    assert 0.95 < laplacian_variance(out, region) / laplacian_variance(real, region) < 1.05
    assert added_weight(0.16, 1.0, 0.4, 1.0) == pytest.approx(0.6)  # (0.4 + w)^2 = 1
    assert added_weight(0.0, 1.0, 0.0, 0.25) == pytest.approx(0.5)  # unrelated: w^2 = 0.25
    assert added_weight(0.5, 0.0, 0.0, 1.0) == 0.0  # nothing to add


def test_texture_reaches_its_target_where_the_result_is_clipped():
    """A bright drawing (teeth, lit skin): the texture added to it is clipped at 255, which
    takes energy off the result; the weight is solved again for that, so the result still
    meets its target, where one solve falls far short."""
    import cv2

    from lipstream.bench.neural_quality import laplacian_variance
    from lipstream.neural.geometry import Sharpness, Texture

    rng = np.random.default_rng(4)
    real = np.clip(200 + rng.normal(0, 30, (96, 96, 3)), 0, 255).astype(np.uint8)
    bright = np.clip(cv2.GaussianBlur(real, (0, 0), 2.0).astype(np.float32) + 45, 0, 255).astype(np.uint8)
    region, where = np.ones((96, 96), bool), np.ones((96, 96), np.float32)
    ratio = lambda out: laplacian_variance(out, region) / laplacian_variance(real, region)  # noqa: E731
    out = Texture().transfer(bright, real, Sharpness.of(real, region), where)
    assert np.mean(out == 255) > 0.3
    assert 0.95 < ratio(out) < 1.05
    assert ratio(Texture(clip_rounds=1).transfer(bright, real, Sharpness.of(real, region), where)) < 0.7


def test_texture_draws_no_edge_of_the_moved_reference_that_the_drawing_lacks():
    """A lip edge drawn soft at x = 40 and the moved reference's at x = 52 (a mouth a little
    unlike the one drawn), with skin grain on both sides: with every pixel of the moved texture
    added, a second, ghost edge appears at x = 52 next to the drawn one; with agreement_gate,
    none does, the drawn edge is sharpened in place, and the grain is still added where the
    two agree (an even shift of colour between them counts as agreeing)."""
    import cv2

    from lipstream.neural.geometry import Sharpness, Texture, agreement_gate

    x = np.arange(96)[None, :, None]
    grain = np.random.default_rng(6).normal(0, 6, (96, 96, 3))
    moved = np.clip(np.where(x < 52, 90, 170) + grain, 0, 255).astype(np.uint8)
    drawn = cv2.GaussianBlur(np.where(x < 40, 100, 180).repeat(96, 0).repeat(3, 2).astype(np.uint8), (0, 0), 2.5)
    where = np.ones((96, 96), np.float32)
    profile = lambda image: image.astype(np.float32).mean(axis=(0, 2))  # noqa: E731 (the mean over rows)
    ghost = lambda image: np.abs(np.diff(profile(image))[49:55]).max()  # noqa: E731 (a step at x = 52)
    steep = lambda image: np.abs(np.diff(profile(image))[37:43]).max()  # noqa: E731 (the drawn edge)
    everywhere = Texture(agreement=0).transfer(drawn, moved, Sharpness.of(moved, where > 0), where)
    gated = Texture().transfer(drawn, moved, Sharpness.of(moved, where > 0), where)
    assert ghost(drawn) < 1.0
    assert ghost(everywhere) > 8.0
    assert ghost(gated) < 0.3 * ghost(everywhere)
    assert steep(gated) > 1.2 * steep(drawn)
    flat = gated[:, 70:90].astype(np.float32)
    assert np.std(flat - cv2.GaussianBlur(flat, (0, 0), 2.0)) > 0.5 * np.std(grain[:, 70:90])
    low = cv2.GaussianBlur(moved, (0, 0), 2.0).astype(np.float32)
    assert agreement_gate(low + 30.0, low, 4.0).min() > 0.99


def test_texture_follows_the_frames_own_sharpness_on_the_skin_around_the_region():
    """A frame whose real skin around the region is softer than the reference's there (motion
    blur, focus) gets softer texture: the target scales by the ring's ratio ** frame_weight;
    the result is measured as pasted, blended into the frame by the blend weights."""
    import cv2

    from lipstream.bench.neural_quality import laplacian_variance
    from lipstream.neural.geometry import Sharpness, Texture

    real = _noise_texture(4)
    soft = cv2.GaussianBlur(real, (0, 0), 2.0)
    where = np.zeros((96, 96), np.float32)
    where[24:72, 24:72] = 1.0
    region, ring = where > 0, np.zeros((96, 96), bool)
    ring[8:88, 8:88] = True
    ring[20:76, 20:76] = False
    sharp_base = _noise_texture(5)
    blurred_base = cv2.GaussianBlur(sharp_base, (0, 0), 0.5)
    ratio = laplacian_variance(blurred_base, ring) / laplacian_variance(sharp_base, ring)
    texture = Texture()
    results = {}
    for name, base in (("sharp", sharp_base), ("blurred", blurred_base)):
        patch = texture.transfer(soft, real, Sharpness.of(real, region, ring), where, base, ring)
        pasted = (where[..., None] * patch + (1 - where[..., None]) * base).round().astype(np.uint8)
        results[name] = laplacian_variance(pasted, region) / laplacian_variance(real, region)
    assert 0.95 < results["sharp"] < 1.05
    assert 0.25 < ratio < 0.7  # inside the ratio's clip (0.25..4)
    assert results["blurred"] == pytest.approx(ratio ** texture.frame_weight, rel=0.08)


def test_a_reference_is_measured_in_its_own_pixels():
    """The same scene through the same lens (1 px of blur) with the face 1.25x nearer: in its
    own pixels the reference is as sharp as the frame (the camera's blur is in pixels), so the
    target is the frame's; resampled to the frame's scale it reads twice as sharp, and the
    texture would be drawn sharper than any frame this camera makes. The scene is 1/f noise,
    whose statistics, like natural images', do not change with scale."""
    import cv2

    from lipstream.neural.geometry import Texture, reference_sharpness

    n = 512
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n)))
    freq[0, 0] = 1.0
    scene = np.real(np.fft.ifft2(np.fft.fft2(np.random.default_rng(7).normal(size=(n, n))) / freq))
    scene = ((scene - scene.mean()) / scene.std()).astype(np.float32)

    def camera(scale):  # frame pixels per scene pixel
        image = cv2.GaussianBlur(cv2.resize(scene, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), (0, 0), 1.0)
        return np.clip(128 + 40 * image, 0, 255).astype(np.uint8)[..., None].repeat(3, 2)

    far, near = camera(0.5), camera(0.625)  # 256 and 320 pixels
    size = 64
    blend = np.zeros((size, size), np.float32)
    blend[12:52, 12:52] = 1.0
    ring = np.zeros((size, size), np.float32)
    ring[4:60, 4:60] = 1.0
    ring[12:52, 12:52] = 0.0
    to_crop_far = np.array([[1.0, 0, -96], [0, 1.0, -96]])  # the same scene square in both
    to_crop_near = np.array([[0.8, 0, -96], [0, 0.8, -96]])
    frame = reference_sharpness(far, to_crop_far, blend, ring)
    reference = reference_sharpness(near, to_crop_near, blend, ring)
    shrunk = cv2.warpAffine(near, np.array([[1.25, 0, 0], [0, 1.25, 0]]), (256, 256),
                            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)  # near resampled onto far's scale
    resampled = reference_sharpness(shrunk, to_crop_far, blend, ring)
    assert 0.85 < reference.region / frame.region < 1.15
    assert resampled.region / frame.region > 1.6
    base = far[96:160, 96:160]
    skin = ring > 0.5
    assert 0.85 < Texture().target(reference, base, skin) / frame.region < 1.15
    assert Texture().target(resampled, base, skin) / frame.region > 1.1  # the ring's correction undoes only part


def test_an_edge_in_the_ring_counts_less_than_a_sharper_grain():
    """The frame's sharpness on the ring mixes the ratio of mean energies with the median's: a
    few strong edges that the reference's ring lacks (a jaw line turned into it) raise the mean
    and hardly the median, so they raise the target by about the mean ratio's square root; a
    grain sharper all over raises both, and the target follows it in full."""
    import cv2

    from lipstream.neural.geometry import Texture, _laplacian_of_grey

    rng = np.random.default_rng(6)
    reference = np.clip(128 + rng.normal(0, 8, (96, 96, 3)), 0, 255).astype(np.uint8)
    edged = reference.copy()
    edged[:, 12::24] = edged[:, 12::24] - 60  # four dark lines
    soft = cv2.GaussianBlur(reference, (0, 0), 0.5)
    energy = lambda image: _laplacian_of_grey(image.astype(np.float32)).ravel() ** 2  # noqa: E731
    texture = Texture()
    mean_ratio = float(energy(edged).mean() / energy(reference).mean())
    assert mean_ratio > 2
    assert texture.frame_ratio(energy(edged), energy(reference)) < mean_ratio ** 0.7
    sharper = float(energy(reference).mean() / energy(soft).mean())
    assert sharper > 2
    assert texture.frame_ratio(energy(reference), energy(soft)) == pytest.approx(sharper, rel=0.15)
    assert Texture(ring_median=0.0).frame_ratio(energy(edged), energy(reference)) == pytest.approx(mean_ratio)


def test_a_crop_finer_than_the_frame_is_low_passed_before_it_is_sampled():
    """A small face (4 crop pixels per frame pixel): the drawing's finest pattern (a 2-pixel
    checkerboard) would alias into a coarse pattern; it comes out as the flat mean instead."""
    from lipstream.neural.geometry import warp_back_parts

    size = 64
    frame = np.full((40, 40, 3), 128, np.uint8)
    to_crop = np.array([[4.0, 0, -40], [0, 4.0, -40]])  # frame (10..26) -> crop (0..64)
    parts = np.full((6, size, size), 0.5, np.float32)
    parts[5] = 0.0  # all colour
    parts[:3] = (np.indices((size, size)).sum(0) // 1 % 2).astype(np.float32)
    patch, _, _ = warp_back_parts(parts, to_crop, np.ones((size, size), np.float32), frame.shape, frame, to_crop)
    inner = patch[3:-3, 3:-3].astype(np.float32)
    assert abs(inner.mean() - 127.5) < 8 and inner.std() < 8


def test_paste_region_in_place_blends_into_the_callers_frame_as_the_copy_does():
    from lipstream.render.compose import paste_region

    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    patch = rng.integers(0, 256, (10, 20, 3), dtype=np.uint8)
    alpha = rng.random((10, 20, 1)).astype(np.float32)
    box = np.array([5, 7, 25, 17])
    kept = frame.copy()
    copied = paste_region(frame, patch, box, alpha)
    np.testing.assert_array_equal(frame, kept)  # the default leaves the frame alone
    assert not np.array_equal(copied, kept)
    assert paste_region(frame, patch, box, alpha, in_place=True) is frame
    np.testing.assert_array_equal(frame, copied)


def test_bench_offline_speed_times_the_render_command_on_the_default_variant(installed):
    from lipstream.audio.io import read_audio
    from lipstream.avatar.resolve import bundled_asset
    from lipstream.bench.neural import offline_speed

    speech = bundled_asset("speech.wav")
    samples, rate = read_audio(speech)
    row = offline_speed(installed, speech)
    assert row["variant"] == "tiny/int8-static" and row["audio_s"] == round(len(samples) / rate, 2)
    assert row["frame_size"] == [SIZE, SIZE] and row["peak_rss_mib"] > 0
    seconds = len(samples) / rate
    assert row["x_real_time_with_process_start"] == pytest.approx(seconds / row["wall_s_with_process_start"], abs=0.02)


def test_band_loss_asks_for_the_fine_bands_aligned_or_only_as_strong():
    """train.band_loss: zero for the target itself; a blurred drawing (fine bands gone) costs in
    both modes; the same texture shifted by a few pixels costs in `aligned` but hardly in
    `amplitude` (only its strength is compared there); gradients reach the prediction."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from lipstream.neural.train import band_loss

    gen = torch.Generator().manual_seed(0)
    target = (0.5 + 0.1 * torch.randn(2, 3, 48, 48, generator=gen)).clamp(0, 1)
    weight = torch.ones(1, 1, 48, 48)
    blurred = F.avg_pool2d(F.pad(target, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    shifted = torch.roll(target, shifts=3, dims=-1)
    for mode in ("aligned", "amplitude"):
        assert float(band_loss(target, target, weight, mode)) == 0.0
        assert float(band_loss(blurred, target, weight, mode)) > 0.02
    aligned, amplitude = (float(band_loss(shifted, target, weight, m)) for m in ("aligned", "amplitude"))
    assert amplitude < 0.2 * aligned
    pred = blurred.clone().requires_grad_(True)
    band_loss(pred, target, weight, "amplitude").backward()
    assert float(pred.grad.abs().sum()) > 0
    with pytest.raises(ValueError):
        band_loss(target, target, weight, "phase")


def test_textured_crop_adds_only_the_moved_references_fine_texture():
    """train.textured_crop: a flat moved reference adds nothing; a striped one adds its stripes
    (zero mean: the coarse part is the drawing's), scaled by the gain."""
    torch = pytest.importorskip("torch")
    from lipstream.neural.train import textured_crop

    drawing = torch.full((1, 3, 32, 32), 0.4)
    flat = torch.full((1, 3, 32, 32), 0.7)
    assert torch.allclose(textured_crop(drawing, flat, 2.0, 1.0), drawing, atol=1e-6)
    stripes = 0.5 + 0.2 * (torch.arange(32) % 2).float().expand(1, 3, 32, 32)
    added = textured_crop(drawing, stripes, 2.0, 1.0) - drawing
    assert float(added.abs().mean()) > 0.08 and abs(float(added.mean())) < 0.01
    assert torch.allclose(textured_crop(drawing, stripes, 2.0, 0.5) - drawing, 0.5 * added, atol=1e-6)


def test_texture_loss_adds_the_textured_crops_l1_and_moves_the_flow(dataset):
    """TrainConfig.texture_weight: the loss is the plain weighted L1 plus the weight times the
    textured crop's (moved reference's fine texture added), and its gradient reaches the flow;
    the rgb head (nothing moved) refuses it."""
    torch = pytest.importorskip("torch")
    from lipstream.neural.model import move_reference
    from lipstream.neural.train import TEXTURE_SIGMA, TrainConfig, Trainer, textured_crop

    trainer = Trainer(dataset, TrainConfig(arch="tiny", steps=1, batch=2, device="cpu", texture_weight=2.0))
    x, target = trainer.inputs(torch.arange(2), augment=False)
    loss, pred = trainer._loss(x, target)
    plain = ((pred - target).abs() * trainer.weight).mean()
    moved = move_reference(trainer.model.parts(x), x[:, 3:6], trainer.model.grid)
    textured = textured_crop(pred, moved, TEXTURE_SIGMA * 64 / 256, 1.0)
    expected = plain + 2.0 * ((textured - target).abs() * trainer.weight).mean()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    trainer.model.zero_grad()
    (loss - plain).backward()  # the texture term alone
    assert float(trainer.model.head.weight.grad[3:5].abs().sum()) > 0
    with pytest.raises(NotSupportedError, match="warp head"):
        Trainer(dataset, TrainConfig(arch="tiny", head="rgb", steps=1, device="cpu", texture_weight=1.0))


def test_the_discriminator_learns_real_crops_from_drawn_ones_and_the_network_pays_for_what_it_tells(dataset):
    """TrainConfig.adversarial_weight: the patch discriminator sees the drawing only where the
    renderer pastes it (the real crop elsewhere), learns to score real crops above an untrained
    network's drawings, and its verdict reaches the network's weights but not its own."""
    torch = pytest.importorskip("torch")
    from lipstream.neural.train import TrainConfig, Trainer

    torch.manual_seed(0)
    trainer = Trainer(dataset, TrainConfig(arch="tiny", steps=1, batch=4, device="cpu", adversarial_weight=0.1))
    x, target = trainer.inputs(torch.arange(4), augment=False)
    with torch.no_grad():
        seen = trainer.seen(trainer.model(x), target)
    outside = (trainer.hidden == 0).expand_as(seen)
    assert torch.equal(seen[outside], target[outside]) and not torch.allclose(seen, target)
    losses = [trainer.discriminator_step(x, target, seen) for _ in range(150)]
    with torch.no_grad():
        real, fake = trainer._scores(x, target), trainer._scores(x, seen)
    assert losses[-1] < 0.6 * losses[0]
    assert float(real.mean()) > float(fake.mean()) + 0.3
    trainer.model.zero_grad()
    trainer.discriminator.zero_grad()
    trainer.adversarial_loss(x, trainer.seen(trainer.model(x), target)).backward()
    assert float(trainer.model.head.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in trainer.discriminator.parameters())


def test_adversarial_training_resumes_with_its_discriminator(dataset, tmp_path):
    torch = pytest.importorskip("torch")
    from lipstream.neural.train import TrainConfig, Trainer

    config = TrainConfig(arch="tiny", steps=4, batch=2, device="cpu", eval_every=4, checkpoint_every=2,
                         adversarial_weight=0.1, adversarial_start=0.0)
    first = Trainer(dataset, config, tmp_path)
    first.train(until=2)
    resumed = Trainer(dataset, config, tmp_path)
    for a, b in zip(first.discriminator.state_dict().values(), resumed.discriminator.state_dict().values()):
        assert torch.equal(a, b)
    summary = resumed.train()
    assert summary["steps"] == 4 and "discriminator_loss" in summary["history"][-1]


def test_full_trains_with_the_discriminator_unless_told_otherwise(monkeypatch):
    """The arch's own weight (train.ADVERSARIAL_WEIGHTS) where none is given, on the command line
    of `python -m lipstream.neural.train` too; an explicit 0 turns it off."""
    pytest.importorskip("torch")
    from lipstream.neural import train

    assert train.TrainConfig(arch="full").adversarial_weight > 0
    assert train.TrainConfig(arch="full", adversarial_weight=0.0).adversarial_weight == 0
    assert train.TrainConfig(arch="lite").adversarial_weight == 0
    seen = []
    monkeypatch.setattr(train, "train", lambda dataset, config, out, callback: seen.append(config) or {})
    for argv in (["d.npz", "--out", "o", "--arch", "lite"], ["d.npz", "--out", "o", "--arch", "full"],
                 ["d.npz", "--out", "o", "--arch", "full", "--adversarial-weight", "0"]):
        train.main(argv)
    assert [c.adversarial_weight for c in seen] == [0.0, train.ADVERSARIAL_WEIGHTS["full"], 0.0]
