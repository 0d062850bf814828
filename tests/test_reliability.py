"""Issue 9, bad-input matrix: every case runs the real CLI and must end in exit code 2.

Each case checks: one ``error: ...`` line naming the file or key and what was expected, no
traceback, no run folder left looking complete (``metrics.json`` marks a finished run) and
nothing written before the command changed by a byte.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from medbalance import _atomic
from medbalance.cli.main import main
from medbalance.engine.checkpoint import load_checkpoint

SIZE = 16
TRAIN = ["--set", "epochs=1", "--set", "batch_size=4", "--set", "progress=false", "-q"]


# ----------------------------------------------------------------------------- helpers
def _write_folder(root: Path, *, n: int = 8, labels: int = 2) -> Path:
    """A valid segmentation folder: ``n`` grey PNGs of SIZE px and masks with ``labels`` classes."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[2 + i % 4 : 9 + i % 4, 3:10] = 1
        if labels > 2:
            mask[12:15, 12:15] = labels - 1
        image = rng.integers(0, 90, (SIZE, SIZE), dtype=np.uint8) + 120 * (mask > 0).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"case{i}.png")
        Image.fromarray(mask * (255 if labels == 2 else 1)).save(root / "masks" / f"case{i}.png")
    return root


def _write_config(path: Path, data: Path, extra: str = "") -> Path:
    path.write_text(
        f"name: tiny\ndata:\n  kind: folder\n  path: {data}\n  val_fraction: 0.25\n"
        f"model:\n  name: unet\n  base_channels: 4\n{extra}"
    )
    return path


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _assert_user_error(argv: list[str], capsys, fragments: tuple[str, ...], workspace: Path) -> str:
    """Run the CLI in-process and check the contract of a bad-input exit."""
    before = _snapshot(workspace)
    finished_before = set(workspace.rglob("metrics.json"))
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    after = _snapshot(workspace)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"files written before the command changed or vanished: {changed}"
    assert set(workspace.rglob("metrics.json")) == finished_before, "a failed run left a finished-looking folder"
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run on a 2-class folder (binary masks), shared by the checkpoint cases."""
    root = tmp_path_factory.mktemp("trained")
    data = _write_folder(root / "data")
    cfg = _write_config(root / "tiny.yaml", data)
    assert main(["train", str(cfg), "--out", str(root / "runs"), *TRAIN]) == 0
    (run,) = (root / "runs").iterdir()
    return run


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A valid data folder, and under ``runs/`` an earlier run folder that must stay untouched."""
    _write_folder(tmp_path / "data")
    earlier = tmp_path / "runs" / "earlier-run"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "metrics.json").write_text("{}\n")
    (earlier / "checkpoints" / "last.pt").write_bytes(b"earlier bytes")
    return tmp_path


# ----------------------------------------------------------------------------- data cases
def _garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes())


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _replace_image(ws: Path, name: str, write: Callable[[Path], None]) -> None:
    (ws / "data" / "images" / "case0.png").unlink()
    write(ws / "data" / "images" / name)


def _replace_mask(ws: Path, name: str, write: Callable[[Path], None]) -> None:
    (ws / "data" / "masks" / "case0.png").unlink()
    write(ws / "data" / "masks" / name)


def _sitk_write(array: np.ndarray) -> Callable[[Path], None]:
    return lambda path: sitk.WriteImage(sitk.GetImageFromArray(array), str(path))


def _then(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def run(path: Path) -> None:
        for step in steps:
            step(path)

    return run


def _mhd_without_raw(path: Path) -> None:
    _sitk_write(np.zeros((SIZE, SIZE), np.int16))(path)
    path.with_suffix(".raw").unlink()


def _mhd_truncated_raw(path: Path) -> None:
    _sitk_write(np.zeros((SIZE, SIZE), np.int16))(path)
    _truncate(path.with_suffix(".raw"))


def _npy(array: np.ndarray) -> Callable[[Path], None]:
    return lambda path: np.save(path, array)


def _npy_lying_header(path: Path) -> None:
    """A 1 KiB ``.npy`` whose header promises 10^11 floats: reading it must not try to allocate them."""
    np.save(path, np.zeros(4, np.float32))
    path.write_bytes(path.read_bytes().replace(b"'shape': (4,), ", b"'shape': (99999999999,),"))


def _png_bomb(path: Path) -> None:
    """A 1x1 PNG whose header says 100000 x 100000 (CRC fixed): a decompression bomb, refused unread."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def _image_float(value: float) -> np.ndarray:
    arr = np.full((SIZE, SIZE), 0.5, np.float32)
    arr[3, 4] = value
    return arr


DATA_CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "corrupt_png": (lambda ws: _garbage(ws / "data" / "images" / "case0.png"), ("case0.png", "cannot read")),
    "truncated_png": (lambda ws: _truncate(ws / "data" / "images" / "case0.png"), ("case0.png",)),
    "png_decompression_bomb": (lambda ws: _png_bomb(ws / "data" / "images" / "case0.png"), ("case0.png",)),
    "truncated_png_mask": (lambda ws: _truncate(ws / "data" / "masks" / "case3.png"), ("case3.png",)),
    "corrupt_nifti": (lambda ws: _replace_image(ws, "case0.nii.gz", _garbage), ("case0.nii.gz", "cannot read")),
    "truncated_nifti": (
        lambda ws: _replace_image(ws, "case0.nii.gz", _then(_sitk_write(np.ones((SIZE, SIZE), np.int16)), _truncate)),
        ("case0.nii.gz",),
    ),
    "corrupt_mhd_header": (lambda ws: _replace_image(ws, "case0.mhd", _garbage), ("case0.mhd",)),
    "mhd_without_raw": (lambda ws: _replace_image(ws, "case0.mhd", _mhd_without_raw), ("case0.mhd",)),
    "mhd_truncated_raw": (lambda ws: _replace_image(ws, "case0.mhd", _mhd_truncated_raw), ("case0.mhd",)),
    "corrupt_npy": (lambda ws: _replace_image(ws, "case0.npy", _garbage), ("case0.npy", "not a valid .npy")),
    "truncated_npy": (
        lambda ws: _replace_image(ws, "case0.npy", _then(_npy(np.ones((SIZE, SIZE), np.float32)), _truncate)),
        ("case0.npy",),
    ),
    "npy_header_claims_373_gib": (
        lambda ws: _replace_image(ws, "case0.npy", _npy_lying_header),
        ("case0.npy",),
    ),
    "pickled_npy": (
        lambda ws: _replace_image(ws, "case0.npy", _npy(np.array([{"a": 1}], dtype=object))),
        ("case0.npy",),
    ),
    "image_mask_size_differ": (
        lambda ws: Image.fromarray(np.zeros((SIZE - 4, SIZE), np.uint8)).save(ws / "data" / "masks" / "case2.png"),
        ("case2.png", "(16, 16)", "(12, 16)"),
    ),
    "negative_label": (
        lambda ws: _replace_mask(ws, "case0.npy", _npy(-np.ones((SIZE, SIZE), np.int64))),
        ("case0.npy", "-1"),
    ),
    "fractional_label": (
        lambda ws: _replace_mask(ws, "case0.npy", _npy(np.full((SIZE, SIZE), 0.5, np.float32))),
        ("case0.npy", "class indices"),
    ),
    "nan_pixel": (lambda ws: _replace_image(ws, "case0.npy", _npy(_image_float(np.nan))), ("case0.npy", "NaN")),
    "inf_pixel": (lambda ws: _replace_image(ws, "case0.npy", _npy(_image_float(np.inf))), ("case0.npy", "infinite")),
    "nan_pixel_metaimage": (  # NIfTI writers store NaN as 0, MetaImage keeps it
        lambda ws: _replace_image(ws, "case0.mha", _sitk_write(_image_float(np.nan))),
        ("case0.mha", "NaN"),
    ),
    "image_without_mask": (lambda ws: (ws / "data" / "masks" / "case4.png").unlink(), ("case4.png", "no mask")),
    "empty_dataset_folder": (
        lambda ws: [p.unlink() for p in (ws / "data").rglob("*.png")],
        ("images", "holds no images"),
    ),
    "missing_masks_folder": (lambda ws: shutil.rmtree(ws / "data" / "masks"), ("masks/",)),
    "missing_data_folder": (lambda ws: shutil.rmtree(ws / "data"), ("data",)),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_is_one_line_with_exit_code_2(case, workspace, capsys):
    corrupt, fragments = DATA_CASES[case]
    corrupt(workspace)
    cfg = _write_config(workspace / "tiny.yaml", workspace / "data")
    _assert_user_error(["train", str(cfg), "--out", str(workspace / "runs"), *TRAIN], capsys, fragments, workspace)


def test_images_of_different_sizes_without_patches_is_one_line(workspace, capsys):
    # native sizes train on patches; asked to batch whole images of different sizes, it refuses
    for sub in ("images", "masks"):
        Image.fromarray(np.zeros((SIZE + 2, SIZE), np.uint8)).save(workspace / "data" / sub / "case5.png")
    cfg = _write_config(workspace / "tiny.yaml", workspace / "data", "patch_size: null\n")
    args = ["train", str(cfg), "--out", str(workspace / "runs"), *TRAIN]
    _assert_user_error(args, capsys, ("differ in size", "patch_size"), workspace)


# ----------------------------------------------------------------------------- config cases
CONFIG_CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "unknown_key": ("lr_rate: 0.1\n", ("'lr_rate'", "did you mean 'lr'")),
    "mistyped_nested_key": ("data:\n  kind: folder\n  pth: x\n", ("'pth'",)),
    "unknown_model_option": ("model:\n  name: unet\n  base_chanels: 4\n", ("'base_chanels'", "base_channels")),
    "unknown_model": ("model:\n  name: unett\n", ("'unett'",)),
    "unknown_loss": ("loss: dise\n", ("loss", "dise")),
    "wrong_type_number": ("lr: fast\n", ("'lr'",)),
    "wrong_type_list": ("lr: [0.1]\n", ("'lr'",)),
    "wrong_type_bool": ("deterministic: maybe\n", ("'deterministic'",)),
    "out_of_range": ("num_workers: -1\n", ("'num_workers'",)),
    "not_a_mapping": ("- epochs\n- 2\n", ("mapping",)),
    "invalid_yaml": ("epochs: [1\n", ("not valid YAML",)),
    "python_object_tag": ("epochs: !!python/object/apply:os.system ['touch pwned']\n", ("YAML",)),
    "model_classes_below_data": ("", ("num_classes",)),  # filled in below: a 2-class model on 3-class data
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_is_one_line_with_exit_code_2(case, workspace, capsys, monkeypatch):
    text, fragments = CONFIG_CASES[case]
    monkeypatch.chdir(workspace)  # a !!python tag that ran would leave 'pwned' here
    if case == "model_classes_below_data":
        shutil.rmtree(workspace / "data")
        _write_folder(workspace / "data", labels=4)
        cfg = _write_config(workspace / "config.yaml", workspace / "data")
        cfg.write_text(cfg.read_text() + "  num_classes: 2\n")
    else:
        cfg = workspace / "config.yaml"
        cfg.write_text(text)
    _assert_user_error(["train", str(cfg), "--out", str(workspace / "runs"), *TRAIN], capsys, fragments, workspace)
    assert not (workspace / "pwned").exists()


def test_bad_set_overrides_are_one_line_with_exit_code_2(workspace, capsys):
    out = ["--out", str(workspace / "runs")]
    for argv, fragments in (
        (["train", "demo", "--set", "epochs=zero"], ("'epochs'",)),
        (["train", "demo", "--set", "epochs"], ("--set", "key=value")),
        (["train", "demo", "--set", "data.nope=1"], ("'nope'",)),
        (["train", "demo", "--set", "epochs.x=1"], ("epochs",)),
        (["train", str(workspace / "missing.yaml")], ("missing.yaml", "does not exist")),
        (["train"], ("CONFIG",)),
    ):
        _assert_user_error([*argv, *out], capsys, fragments, workspace)


# ----------------------------------------------------------------------------- checkpoints and runs
def _copy_run(trained: Path, ws: Path) -> Path:
    run = ws / "runs" / trained.name
    shutil.copytree(trained, run)
    return run


def _predict(run: Path, ws: Path) -> list[str]:
    return ["predict", str(run), "--input", str(ws / "data" / "images"), "--out", str(ws / "pred"), "-q"]


def _other_class_count(run: Path, ws: Path) -> None:
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    state["model"] = {k: torch.cat([v, v[:1]]) if v.shape[:1] == (1,) else v for k, v in state["model"].items()}
    state["meta"] = {**state["meta"], "num_classes": 3, "out_channels": 3}
    torch.save(state, run / "checkpoints" / "best.pt")


def _wider_config(run: Path) -> None:
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("base_channels: 4", "base_channels: 8"))


def _earlier_prediction(ws: Path) -> None:
    (ws / "pred").mkdir()
    (ws / "pred" / "case0.png").write_bytes(b"an earlier prediction")


class _Exploit:
    """Unpickling this calls ``open(path, "w")``: proof that the loader ran code from the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _crafted_checkpoint(run: Path, ws: Path) -> None:
    torch.save({"model": _Exploit(ws / "pwned"), "meta": {}}, run / "checkpoints" / "best.pt")


def _three_class_data(ws: Path) -> None:
    shutil.rmtree(ws / "data")
    _write_folder(ws / "data", labels=3)


RUN_CASES: dict[str, tuple[Callable[[Path, Path], list[str]], tuple[str, ...]]] = {
    "missing_checkpoint": (
        lambda run, ws: (run / "checkpoints" / "best.pt").unlink() or _predict(run, ws),
        ("best.pt", "does not exist"),
    ),
    "truncated_checkpoint": (
        lambda run, ws: _truncate(run / "checkpoints" / "best.pt") or _predict(run, ws),
        ("best.pt", "cannot load checkpoint"),
    ),
    "checkpoint_not_medbalance": (
        lambda run, ws: torch.save({"w": torch.ones(2)}, run / "checkpoints" / "best.pt") or _predict(run, ws),
        ("best.pt", "not a medbalance checkpoint"),
    ),
    "checkpoint_of_another_architecture": (
        lambda run, ws: _wider_config(run) or _predict(run, ws),
        ("does not fit model 'unet'",),
    ),
    "checkpoint_of_another_class_count": (
        lambda run, ws: _other_class_count(run, ws) or _predict(run, ws),
        ("does not fit model 'unet'",),
    ),
    "crafted_pickle_checkpoint": (
        lambda run, ws: _crafted_checkpoint(run, ws) or _predict(run, ws),
        ("best.pt", "refused unread", "Unsupported global: GLOBAL io.open"),
    ),
    "not_a_run_folder": (lambda run, ws: _predict(ws / "data", ws), ("not a run folder",)),
    "resume_without_last_checkpoint": (
        lambda run, ws: (run / "checkpoints" / "last.pt").unlink() or ["train", "--resume", str(run)],
        ("no checkpoints/last.pt",),
    ),
    "resume_a_finished_run": (lambda run, ws: ["train", "--resume", str(run)], ("finished run",)),
    "resume_with_a_config": (lambda run, ws: ["train", "demo", "--resume", str(run)], ("--resume",)),
    "evaluate_labels_beyond_the_run": (
        lambda run, ws: _three_class_data(ws) or ["evaluate", str(run), "--data", str(ws / "data")],
        ("labels up to 2", "2 classes"),
    ),
    "predict_over_existing_output": (
        lambda run, ws: _earlier_prediction(ws) or _predict(run, ws),
        ("case0.png", "already exists"),
    ),
    "predict_missing_input": (
        lambda run, ws: ["predict", str(run), "--input", str(ws / "nope"), "--out", str(ws / "pred")],
        ("nope", "does not exist"),
    ),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_bad_checkpoint_or_run_is_one_line_with_exit_code_2(case, trained, workspace, capsys):
    make_argv, fragments = RUN_CASES[case]
    argv = make_argv(_copy_run(trained, workspace), workspace)
    _assert_user_error(argv, capsys, fragments, workspace)
    assert not (workspace / "pwned").exists(), "loading a checkpoint ran code from it"


def test_names_taken_from_data_cannot_escape_the_prediction_folder(tmp_path):
    from medbalance.data.datasets import ArrayDataset
    from medbalance.engine.run import PredictionWriter
    from medbalance.engine.tasks import make_task

    hostile = ["../../escaped", "/tmp/absolute-escape", "a/../../b", "sub/dir/c", "../x"]
    data = ArrayDataset(np.zeros((5, 1, 4, 4), np.float32), np.zeros((5, 4, 4), np.int64), num_classes=2, names=hostile)
    folder = tmp_path / "out" / "predictions"
    writer = PredictionWriter(data, make_task("segmentation", 2), folder)
    batch = {"index": torch.arange(5), "target": torch.zeros(5, 4, 4, dtype=torch.long)}
    writer(batch, torch.zeros(5, 2, 4, 4), torch.zeros(5, 4, 4, dtype=torch.long))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(p.resolve().is_relative_to(folder.resolve()) for p in written), written
    assert not Path("/tmp/absolute-escape.png").exists()


# ----------------------------------------------------------------------------- the output side
def test_an_output_folder_that_cannot_be_created_is_one_line(workspace, capsys, trained):
    blocker = workspace / "a_file"
    blocker.write_text("not a folder\n")
    cfg = _write_config(workspace / "tiny.yaml", workspace / "data")
    for out, expected in ((blocker, "is a file; expected a folder"), (blocker / "runs", "Not a directory")):
        _assert_user_error(["train", str(cfg), "--out", str(out), *TRAIN], capsys, ("a_file", expected), workspace)
    run = _copy_run(trained, workspace)
    argv = ["predict", str(run), "--input", str(workspace / "data" / "images"), "--out", str(blocker), "-q"]
    _assert_user_error(argv, capsys, ("a_file",), workspace)


def test_a_full_disk_stops_with_one_line_and_keeps_the_last_good_checkpoint(workspace, capsys, monkeypatch):
    """The second write of ``last.pt`` goes to ``/dev/full`` (a real ENOSPC); epoch 1's copy stays whole."""
    writes = []

    def open_full_on_second_last_pt(path, mode="r", *args, **kwargs):
        if ".last.pt.tmp" in str(path):
            writes.append(path)
            if len(writes) == 2:
                return open("/dev/full", mode, *args, **kwargs)
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(_atomic, "open", open_full_on_second_last_pt, raising=False)
    cfg = _write_config(workspace / "tiny.yaml", workspace / "data")
    argv = ["train", str(cfg), "--out", str(workspace / "runs"), *TRAIN, "--set", "epochs=3"]
    _assert_user_error(argv, capsys, ("last.pt", "No space left on device"), workspace)
    (run,) = (p for p in (workspace / "runs").iterdir() if p.name.startswith("tiny-"))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert not list((run / "checkpoints").glob(".*tmp*"))
    monkeypatch.undo()  # space freed again
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 3


def test_the_real_entry_point_prints_no_traceback(workspace):
    """``python -m medbalance`` (a subprocess) answers a bad key and bad data in one line.

    The truncated MetaImage also checks that ITK's own C++ output to stderr is kept off it.
    """
    _replace_image(workspace, "case0.mhd", _mhd_truncated_raw)
    cfg = _write_config(workspace / "tiny.yaml", workspace / "data", "epoch: 3\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    good_keys = _write_config(workspace / "ok.yaml", workspace / "data")
    for config, fragment in ((cfg, "'epoch'"), (good_keys, "case0.mhd")):
        res = subprocess.run(
            [sys.executable, "-m", "medbalance", "train", str(config), "--out", str(workspace / "runs")],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert res.returncode == 2, res.stderr
        assert res.stderr.startswith("error: ") and fragment in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
