"""Issue 20, hostile input round 2: nothing escapes the named folder, nothing is overwritten or lost.

One section per class of the issue: (1) writes outside the folder the user named, (2)
overwrites, (3) reads outside the dataset, (4) corrupt input, (5) checkpoint state, (6)
non-finite training, (7) one line instead of a traceback. Every CLI case goes through
``_assert_user_error`` of ``tests/test_reliability.py``: exit code 2, one ``error:`` line
naming the file or key, no traceback, nothing written before changed.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from medbalance._atomic import remove_stale_temporaries
from medbalance._memory import check_allocation, format_bytes
from medbalance._paths import check_name, claim_new, resolve_inside
from medbalance.cli.main import main
from medbalance.data.io import check_header_data
from medbalance.data.medical import read_slices
from medbalance.engine.checkpoint import load_checkpoint
from medbalance.engine.rundir import LOCK_NAME, HistoryLog, create_run_dir, run_lock
from medbalance.errors import ConfigError, DataError, RunDirError, TrainingError
from tests.test_reliability import (  # noqa: F401  (``trained`` and ``workspace`` are fixtures)
    SIZE,
    TRAIN,
    _assert_user_error,
    _copy_run,
    _write_config,
    _write_folder,
    trained,
    workspace,
)


# ----------------------------------------------------------------------------- helpers
def _tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` without following links: files by content, links by target."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder, name)
            key = str(p.relative_to(root))
            if p.is_symlink():
                out[key] = "link:" + os.readlink(p)
            elif p.is_file():
                out[key] = "file:" + str(hash(p.read_bytes()))
            else:
                out[key] = "dir"
    return out


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {k for k in set(before) | set(after) if before.get(k) != after.get(k)}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _resumable(trained: Path, ws: Path) -> Path:
    """A copy of the trained run that looks interrupted after its last epoch (no metrics.json)."""
    run = _copy_run(trained, ws)
    (run / "metrics.json").unlink()
    return run


def _predict(run: Path, ws: Path, out: Path | None = None, inputs: Path | None = None) -> list[str]:
    inputs = inputs or ws / "data" / "images"
    return ["predict", str(run), "--input", str(inputs), "--out", str(out or ws / "pred"), "-q"]


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` at ``path``; the test is skipped where mounting is not allowed."""
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory) -> Path:
    """A finished tiny 3-class segmentation run (for ``combine``)."""
    root = tmp_path_factory.mktemp("multi")
    data = _write_folder(root / "data", labels=3)
    cfg = _write_config(root / "tiny.yaml", data)
    assert main(["train", str(cfg), "--out", str(root / "runs"), *TRAIN]) == 0
    return next((root / "runs").iterdir())


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory) -> Path:
    """A finished tiny segmentation run with 3 input channels."""
    root = tmp_path_factory.mktemp("colour")
    data = _write_folder(root / "data")
    cfg = _write_config(root / "tiny.yaml", data)
    assert main(["train", str(cfg), "--out", str(root / "runs"), *TRAIN, "--set", "data.channels=3"]) == 0
    return next((root / "runs").iterdir())


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory) -> Path:
    """A finished tiny classification run on a folder with one sub-folder per class."""
    root = tmp_path_factory.mktemp("cls")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("benign", "malignant")):
        (root / "data" / name).mkdir(parents=True)
        for i in range(6):
            image = rng.integers(0, 100, (SIZE, SIZE), dtype=np.uint8) + 100 * c
            Image.fromarray(image.astype(np.uint8)).save(root / "data" / name / f"{name}{i}.png")
    cfg = root / "cls.yaml"
    cfg.write_text(
        f"name: cls\ndata:\n  kind: folder\n  task: classification\n  path: {root / 'data'}\n  val_fraction: 0.34\n"
        "model:\n  name: resnet32\nloss: ce\n"
    )
    assert main(["train", str(cfg), "--out", str(root / "runs"), *TRAIN]) == 0
    return next((root / "runs").iterdir())


def _raw(path: Path, size: int) -> None:
    path.write_bytes(bytes(size))


def _mhd(folder: Path, name: str, data_file: str, *, dims=(SIZE, SIZE), extra: str = "") -> Path:
    header = folder / name
    header.write_text(
        f"ObjectType = Image\nNDims = {len(dims)}\nDimSize = {' '.join(map(str, dims))}\n"
        f"ElementType = MET_UCHAR\n{extra}ElementDataFile = {data_file}\n"
    )
    return header


def _nifti(path: Path, cut: float) -> None:
    """A NIfTI image of SIZE x SIZE float32 voxels, cut to ``cut`` of its bytes (gzip stream cut for .nii.gz)."""
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((SIZE, SIZE), dtype=np.float32)), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])


# ============================================================================ 1: writes outside
def _outside_link(folder: Path, name: str, ws: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (ws / "outside").mkdir(exist_ok=True)
    (folder / name).symlink_to(ws / "outside" / name)


OUTSIDE_CASES: dict[str, tuple[Callable[..., list[str]], tuple[str, ...]]] = {
    "train_name_climbs_out": (
        lambda ws, runs: [
            "train",
            str(_write_config(ws / "t.yaml", ws / "data")),
            "--out",
            str(ws / "runs"),
            *TRAIN,
            "--set",
            "name=../../x",
        ],
        ("'name'", "../../x", "without path parts"),
    ),
    "train_name_absolute": (
        lambda ws, runs: [
            "train",
            str(_write_config(ws / "t.yaml", ws / "data")),
            "--out",
            str(ws / "runs"),
            *TRAIN,
            "--set",
            f"name={ws / 'outside' / 'abs'}",
        ],
        ("'name'", "without path parts"),
    ),
    "train_name_dotdot": (
        lambda ws, runs: [
            "train",
            str(_write_config(ws / "t.yaml", ws / "data", "name: ..\n")),
            "--out",
            str(ws / "runs"),
            *TRAIN[:-1],
        ],
        ("'name'",),
    ),
    "predict_dangling_link_in_out": (
        lambda ws, runs: _outside_link(ws / "pred", "case0.png", ws) or _predict(runs["binary"], ws),
        ("case0.png", "already exists"),
    ),
    "predict_out_is_a_dangling_link": (
        lambda ws, runs: (ws / "pred").symlink_to(ws / "outside" / "nowhere") or _predict(runs["binary"], ws),
        ("pred", "dangling symbolic link"),
    ),
    "combine_dangling_link_in_out": (
        lambda ws, runs: (
            _outside_link(ws / "comb", "case0.png", ws)
            or [
                "combine",
                str(runs["multi"]),
                str(runs["binary"]),
                "--input",
                str(ws / "data" / "images"),
                "--out",
                str(ws / "comb"),
                "-q",
            ]
        ),
        ("case0.png", "already exists"),
    ),
    "inspect_out_is_a_link": (
        lambda ws, runs: (
            (ws / "rep").symlink_to(ws / "outside" / "nowhere")
            or ["inspect", str(ws / "data"), "--out", str(ws / "rep"), "-q"]
        ),
        ("rep", "symbolic link"),
    ),
    "report_compare_out_is_a_link": (
        lambda ws, runs: (
            (ws / "cmp").symlink_to(ws / "outside" / "nowhere")
            or ["report", str(runs["binary"]), str(runs["multi"]), "--out", str(ws / "cmp"), "-q"]
        ),
        ("cmp", "symbolic link"),
    ),
    "export_out_is_a_dangling_link": (
        lambda ws, runs: (
            _outside_link(ws / "exp", "m.onnx", ws)
            or ["export", str(runs["binary"]), "--out", str(ws / "exp" / "m.onnx"), "--no-check", "-q"]
        ),
        ("m.onnx", "outside"),
    ),
    "export_forced_through_a_dangling_link": (
        lambda ws, runs: (
            _outside_link(ws / "exp", "m.onnx", ws)
            or ["export", str(runs["binary"]), "--out", str(ws / "exp" / "m.onnx"), "--no-check", "--force", "-q"]
        ),
        ("m.onnx", "outside"),
    ),
    "report_of_a_run_with_a_link_out": (
        lambda ws, runs: _outside_link(runs["binary"] / "report", "planted.png", ws) or ["report", str(runs["binary"])],
        ("planted.png", "outside"),
    ),
    "resume_of_a_run_with_a_link_out": (
        lambda ws, runs: (
            (runs["binary"] / "metrics.json").unlink()
            or _outside_link(runs["binary"] / "predictions", "planted.png", ws)
            or ["train", "--resume", str(runs["binary"]), "-q"]
        ),
        ("planted.png", "outside"),
    ),
    "experiment_out_is_a_dangling_link": (
        lambda ws, runs: (
            (ws / "exps").symlink_to(ws / "outside" / "nowhere")
            or ["experiment", "loss-study", "--scale", "smoke", "--out", str(ws / "exps"), "-q"]
        ),
        ("exps",),
    ),
}


@pytest.mark.parametrize("case", list(OUTSIDE_CASES))
def test_a_write_never_lands_outside_the_named_folder(case, trained, multi_run, workspace, capsys):
    runs = {"binary": _copy_run(trained, workspace), "multi": _copy_run(multi_run, workspace)}
    (workspace / "outside").mkdir(exist_ok=True)
    make_argv, fragments = OUTSIDE_CASES[case]
    argv = make_argv(workspace, runs)
    outside = _tree(workspace / "outside")
    _assert_user_error(argv, capsys, fragments, workspace)
    assert _tree(workspace / "outside") == outside, "a command wrote through a link to outside its folder"
    assert not list(workspace.parent.glob("x*")) and not (workspace / "outside" / "abs").exists()


def _allowed(argv: list[str], ws: Path) -> list[Path]:
    """The folders a command may write into: its --out (export: the folder of its --out FILE, which
    gets the record too), and the run that report/export without --out and evaluate write into."""
    allowed = [Path(argv[argv.index("--out") + 1])] if "--out" in argv else []
    if argv[0] == "export" and allowed:
        allowed = [allowed[0].parent]
    if argv[0] == "evaluate" or (argv[0] in ("report", "export") and "--out" not in argv):
        allowed.append(Path(argv[1]))
    return allowed


@pytest.mark.slow  # about 5 s per example on the shared 2-core machine (some train or export)
@pytest.mark.parametrize("command", ["train", "predict", "inspect", "report", "export", "combine", "evaluate"])
@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(name=st.sampled_from(["ok", "../esc", "/abs", "a/b", "..", "."]), link=st.booleans())
def test_property_no_command_writes_outside_its_output_folder(
    command, name, link, trained, multi_run, tmp_path_factory
):
    """Whatever the command, name or planted link: every change under the temporary root lies in the
    command's own output folder (or, for ``report``/``export`` without ``--out``, the run it names)."""
    ws = tmp_path_factory.mktemp("prop")
    _write_folder(ws / "data")
    (ws / "outside").mkdir()
    runs = {"binary": _copy_run(trained, ws), "multi": _copy_run(multi_run, ws)}
    out = ws / "out"
    if link:  # a dangling link where the command would write, pointing outside
        _outside_link(out, "case0.png", ws)
        _outside_link(out, "model.onnx", ws)
    argv = {
        "train": [
            "train",
            str(_write_config(ws / "t.yaml", ws / "data")),
            "--out",
            str(out),
            *TRAIN,
            "--set",
            f"name={name}",
        ],
        "predict": _predict(runs["binary"], ws, out),
        "inspect": ["inspect", str(ws / "data"), "--out", f"{out}/{name}", "-q"],
        "report": ["report", str(runs["binary"]), str(runs["multi"]), "--out", f"{out}/{name}", "-q"],
        "export": ["export", str(runs["binary"]), "--out", str(out / "model.onnx"), "--no-check", "-q"],
        "combine": [
            "combine",
            str(runs["multi"]),
            str(runs["binary"]),
            "--input",
            str(ws / "data" / "images"),
            "--out",
            str(out),
            "-q",
        ],
        "evaluate": ["evaluate", str(runs["binary"]), "--data", str(ws / "data"), "-q"],
    }[command]
    before = _tree(ws)
    code = main(argv)
    assert code in (0, 2)
    roots = [p.resolve() for p in _allowed(argv, ws)]
    after = _tree(ws)
    for changed in _changed(before, after):
        where = (ws / changed).parent.resolve() / (ws / changed).name
        lexical = [parent for p in _allowed(argv, ws) for parent in p.parents]  # mkdir -p of --out, '..' and all
        made = ws / changed in lexical or any(where in r.parents for r in roots)
        parent_made = after.get(changed) == "dir" and made
        assert parent_made or any(where == r or r in where.parents for r in roots), (argv, changed)
    assert not any((ws / "outside").iterdir()), "a write followed a link out of the output folder"
    assert not (ws.parent / "esc").exists() and not Path("/abs").exists()


@given(name=st.text(min_size=0, max_size=12))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_a_run_folder_is_always_a_child_of_out(name, tmp_path):
    out = tmp_path / "runs"
    try:
        run = create_run_dir(out, name)
    except RunDirError as exc:
        assert "'name'" in str(exc) or "run folder" in str(exc)
        return
    except OSError:  # a name the file system refuses (too long, ...): reported by the CLI in one line
        return
    assert run.parent == out and run.resolve().parent == out.resolve()


def test_path_helpers(tmp_path):
    assert check_name("unet", key="name") == "unet"
    for bad in ("", ".", "..", "a/b", "/abs", "a\\b"):
        with pytest.raises(RunDirError, match="invalid value for 'name'"):
            check_name(bad, key="name")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RunDirError, match="outside"):
        resolve_inside(tmp_path / "in", tmp_path / "in" / "link")
    with pytest.raises(RunDirError, match="outside"):
        resolve_inside(tmp_path / "in", tmp_path / "in" / ".." / "x")
    assert resolve_inside(tmp_path / "in", tmp_path / "in" / "a" / "b") == (tmp_path / "in" / "a" / "b").resolve()
    (tmp_path / "in" / "inner").symlink_to(tmp_path / "in" / "nothing")
    with pytest.raises(RunDirError, match="already exists"):
        claim_new(tmp_path / "in", tmp_path / "in" / "inner", what="x")  # a dangling link exists
    (tmp_path / "in" / "f").write_text("x")
    assert claim_new(tmp_path / "in", tmp_path / "in" / "f", force=True).name == "f"


# ============================================================================ 2: overwrites
def _export_twice(ws: Path, run: Path) -> list[str]:
    assert main(["export", str(run), "--no-check", "-q"]) == 0
    return ["export", str(run), "--no-check", "-q"]


OVERWRITE_CASES: dict[str, tuple[Callable[[Path, Path], list[str]], tuple[str, ...]]] = {
    "inspect_out_into_a_run": (
        lambda ws, run: ["inspect", str(ws / "data"), "--out", str(run), "-q"],
        ("--out", "is not empty"),
    ),
    "export_out_over_an_existing_file": (
        lambda ws, run: _raw(ws / "keep.onnx", 4) or ["export", str(run), "--out", str(ws / "keep.onnx")],
        ("keep.onnx", "already exists"),
    ),
    "a_second_export": (_export_twice, ("model.onnx", "already exists", "--force")),
    "report_compare_into_a_non_empty_folder": (
        lambda ws, run: ["report", str(run), str(run), "--out", str(ws / "data")],
        ("data", "is not empty"),
    ),
}


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if "export" in c else c for c in OVERWRITE_CASES]
)
def test_nothing_is_overwritten(case, trained, workspace, capsys):
    run = _copy_run(trained, workspace)
    make_argv, fragments = OVERWRITE_CASES[case]
    _assert_user_error(make_argv(workspace, run), capsys, fragments, workspace)


@pytest.mark.slow  # exports through ONNX or torch.export: 5-8 s on the shared machine
def test_export_force_replaces_and_a_failed_check_leaves_no_model(trained, workspace, capsys, monkeypatch):
    run = _copy_run(trained, workspace)
    out = workspace / "exp" / "model.pt2"
    assert main(["export", str(run), "--format", "pt2", "--out", str(out), "--no-check", "-q"]) == 0
    first = out.stat().st_mtime_ns
    assert (workspace / "exp" / "model.pt2.json").is_file()
    assert main(["export", str(run), "--format", "pt2", "--out", str(out), "--no-check", "--force", "-q"]) == 0
    assert out.stat().st_mtime_ns != first
    # NaN logits from the exported model: refused, and the model file is not left behind
    import medbalance.export as export

    monkeypatch.setattr(export, "load_exported", lambda path: lambda x: np.full((len(x), 1, *x.shape[2:]), np.nan))
    capsys.readouterr()
    assert main(["export", str(run), "--format", "pt2", "--out", str(workspace / "nan.pt2"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "NaN or infinite logits" in err and "Traceback" not in err
    assert not (workspace / "nan.pt2").exists() and not list(workspace.glob(".nan.pt2.tmp-*"))


# ============================================================================ 3: reads outside the dataset
def _mha_cut(d: Path) -> None:
    with _mhd(d, "case0.mha", "LOCAL").open("ab") as fh:
        fh.write(bytes(10))


READ_CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "element_data_file_absolute": (
        lambda d: _raw(d.parent / "secret.raw", SIZE * SIZE) or _mhd(d, "case0.mhd", str(d.parent / "secret.raw")),
        ("case0.mhd", "ElementDataFile", "outside the header's folder"),
    ),
    "element_data_file_system_file": (
        lambda d: _mhd(d, "case0.mhd", "/etc/hostname"),
        ("case0.mhd", "/etc/hostname", "outside the header's folder"),
    ),
    "element_data_file_climbs_out": (
        lambda d: _raw(d.parent / "secret.raw", SIZE * SIZE) or _mhd(d, "case0.mhd", "../secret.raw"),
        ("case0.mhd", "outside the header's folder"),
    ),
    "element_data_file_list": (
        lambda d: _mhd(d, "case0.mhd", "LIST"),
        ("case0.mhd", "names several files"),
    ),
    "element_data_file_pattern": (
        lambda d: _mhd(d, "case0.mhd", "slice%03d.raw 1 2 1"),
        ("case0.mhd", "names several files"),
    ),
    "nrrd_data_file_outside": (
        lambda d: (d / "case0.nrrd").write_text(
            f"NRRD0004\ntype: uint8\ndimension: 2\nsizes: {SIZE} {SIZE}\nencoding: raw\ndata file: /etc/hostname\n\n"
        ),
        ("case0.nrrd", "data file", "outside the header's folder"),
    ),
    "raw_longer_than_the_header": (
        lambda d: _raw(d / "case0.raw", SIZE * SIZE + 5) or _mhd(d, "case0.mhd", "case0.raw"),
        ("case0.raw", f"holds {SIZE * SIZE + 5} bytes", f"announces {SIZE * SIZE}"),
    ),
    "raw_shorter_than_the_header": (
        lambda d: _raw(d / "case0.raw", SIZE * SIZE - 1) or _mhd(d, "case0.mhd", "case0.raw"),
        ("case0.raw", f"holds {SIZE * SIZE - 1} bytes"),
    ),
    "mha_local_data_cut_short": (
        _mha_cut,
        ("case0.mha", "holds 10 bytes"),
    ),
    "header_claims_tens_of_gb": (
        lambda d: _raw(d / "case0.raw", 4) or _mhd(d, "case0.mhd", "case0.raw", dims=(100000, 100000, 20)),
        ("case0.mhd", "needs about 186.3 GiB of memory"),
    ),
}


@pytest.mark.parametrize("command", ["train", "predict"])
@pytest.mark.parametrize("case", list(READ_CASES))
def test_a_header_cannot_read_outside_its_folder_or_past_its_size(case, command, trained, workspace, capsys):
    (workspace / "data" / "images" / "case0.png").unlink()
    write, fragments = READ_CASES[case]
    write(workspace / "data" / "images")
    if command == "train":
        argv = [
            "train",
            str(_write_config(workspace / "t.yaml", workspace / "data")),
            "--out",
            str(workspace / "runs"),
            *TRAIN,
        ]
    else:
        argv = _predict(_copy_run(trained, workspace), workspace)
    _assert_user_error(argv, capsys, fragments, workspace)


def test_a_valid_metaimage_with_its_data_beside_it_is_read(tmp_path):
    pixels = np.arange(SIZE * SIZE, dtype=np.uint8)
    (tmp_path / "ok.raw").write_bytes(pixels.tobytes())
    header = _mhd(tmp_path, "ok.mhd", "ok.raw")
    check_header_data(header)
    slices, _ = read_slices(header)
    np.testing.assert_allclose(slices[0, 0].ravel(), pixels / 255.0, atol=1e-6)
    # ITK writes LOCAL data too: it passes the exact-size check
    sitk.WriteImage(sitk.GetImageFromArray(pixels.reshape(SIZE, SIZE)), str(tmp_path / "local.mha"))
    check_header_data(tmp_path / "local.mha")
    # and a compressed .mhd, whose raw size says nothing about the pixels
    sitk.WriteImage(sitk.GetImageFromArray(pixels.reshape(SIZE, SIZE)), str(tmp_path / "z.mhd"), True)
    check_header_data(tmp_path / "z.mhd")


# ============================================================================ 4: corrupt input
def _truncated_nifti(suffix: str, cut: float) -> Callable[[Path], None]:
    def write(images: Path) -> None:
        (images / "case0.png").unlink()
        _nifti(images / f"case0{suffix}", cut)

    return write


def _cls_config(ws: Path) -> Path:
    path = ws / "cls.yaml"
    path.write_text(f"data:\n  kind: folder\n  task: classification\n  path: {ws / 'data'}\nmodel:\n  name: resnet32\n")
    return path


def _metrics(run: Path, text: str) -> None:
    (run / "metrics.json").write_text(text)


def _grey_png(ws: Path) -> Path:
    return ws / "data" / "images" / "case0.png"


CORRUPT_CASES: dict[str, tuple[Callable[[Path, dict], list[str]], tuple[str, ...]]] = {
    "truncated_nii_gz_predict": (
        lambda ws, runs: _truncated_nifti(".nii.gz", 0.7)(ws / "data" / "images") or _predict(runs["binary"], ws),
        ("case0.nii.gz",),
    ),
    "truncated_nii_predict": (
        lambda ws, runs: _truncated_nifti(".nii", 0.7)(ws / "data" / "images") or _predict(runs["binary"], ws),
        ("case0.nii", "is truncated"),
    ),
    "truncated_nii_gz_train": (
        lambda ws, runs: (
            _truncated_nifti(".nii.gz", 0.5)(ws / "data" / "images")
            or ["train", str(_write_config(ws / "t.yaml", ws / "data")), "--out", str(ws / "runs"), *TRAIN]
        ),
        ("case0.nii.gz",),
    ),
    "truncated_nii_train": (
        lambda ws, runs: (
            _truncated_nifti(".nii", 0.9)(ws / "data" / "images")
            or ["train", str(_write_config(ws / "t.yaml", ws / "data")), "--out", str(ws / "runs"), *TRAIN]
        ),
        ("case0.nii", "is truncated"),
    ),
    "classification_run_on_a_segmentation_folder": (
        lambda ws, runs: ["evaluate", str(runs["cls"]), "--data", str(ws / "data"), "-q"],
        ("data", "segmentation folder (images/ + masks/)"),
    ),
    "classification_config_on_a_segmentation_folder": (
        lambda ws, runs: ["train", str(_cls_config(ws)), "--out", str(ws / "runs"), *TRAIN],
        ("segmentation folder",),
    ),
    "inspect_classification_config_on_a_segmentation_folder": (
        lambda ws, runs: [
            "inspect",
            str(_write_config(ws / "t.yaml", ws / "data")),
            "--set",
            "data.task=classification",
            "-q",
        ],
        ("segmentation folder",),
    ),
    "metrics_json_not_json": (
        lambda ws, runs: _metrics(runs["binary"], "nope") or ["report", str(runs["binary"])],
        ("metrics.json", "not valid JSON"),
    ),
    "metrics_json_a_list": (
        lambda ws, runs: _metrics(runs["binary"], "[1]") or ["report", str(runs["binary"])],
        ("metrics.json", "expected a JSON object, found list"),
    ),
    "metrics_json_of_another_shape": (
        lambda ws, runs: _metrics(runs["binary"], '{"val": 3}') or ["report", str(runs["binary"])],
        ("metrics.json", "not as medbalance writes it"),
    ),
    "grey_image_into_a_colour_run": (
        lambda ws, runs: _predict(runs["colour"], ws, inputs=_grey_png(ws)),
        ("case0.png", "grey (1 channel)", "3-channel"),
    ),
    "grey_npy_into_a_colour_run": (
        lambda ws, runs: (
            np.save(ws / "g.npy", np.zeros((SIZE, SIZE), np.float32))
            or _predict(runs["colour"], ws, inputs=ws / "g.npy")
        ),
        ("g.npy", "grey (1 channel)"),
    ),
    "grey_volume_into_a_colour_run": (
        lambda ws, runs: (
            sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, SIZE, SIZE), np.uint8)), f"{ws}/v.nii.gz")
            or _predict(runs["colour"], ws, inputs=ws / "v.nii.gz")
        ),
        ("v.nii.gz", "grey (1 channel)"),
    ),
}


@pytest.mark.parametrize("case", list(CORRUPT_CASES))
def test_corrupt_input_is_one_line(case, trained, colour_run, classification_run, workspace, capsys):
    runs = {"binary": _copy_run(trained, workspace), "colour": _copy_run(colour_run, workspace)}
    runs["cls"] = _copy_run(classification_run, workspace)
    make_argv, fragments = CORRUPT_CASES[case]
    _assert_user_error(make_argv(workspace, runs), capsys, fragments, workspace)


def test_complete_nifti_passes_and_colour_into_a_grey_run_is_converted(tmp_path):
    for suffix in (".nii", ".nii.gz"):
        _nifti(tmp_path / f"ok{suffix}", 1.0)
        check_header_data(tmp_path / f"ok{suffix}")
        assert read_slices(tmp_path / f"ok{suffix}")[0].shape == (1, 1, SIZE, SIZE)
    rgb = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    # colour into a grey run: converted as at training time (read_image), the documented behaviour
    grey = read_slices(tmp_path / "c.png", channels=1)[0]
    np.testing.assert_allclose(grey[0, 0], (rgb / 255.0) @ np.array([0.299, 0.587, 0.114]), atol=1e-5)
    assert read_slices(tmp_path / "c.png", channels=3)[0].shape == (1, 3, SIZE, SIZE)


# ============================================================================ 5: checkpoint state
def _edit_checkpoint(run: Path, name: str, edit: Callable[[dict], object]) -> None:
    path = run / "checkpoints" / name
    state = load_checkpoint(path)
    edit(state)
    torch.save(state, path)


def _first_weight(state: dict) -> str:
    return next(k for k, v in state["model"].items() if v.is_floating_point())


def _shrink_first_weight(state: dict) -> None:
    state["model"][_first_weight(state)] = torch.zeros(2)


def _set(key: str, value) -> Callable[[dict], None]:
    def edit(state: dict) -> None:
        node, *path = key.split(".")
        target = state
        for part in [node, *path][:-1]:
            target = target[part]
        target[[node, *path][-1]] = value

    return edit


CHECKPOINT_CASES: dict[str, tuple[Callable[[dict], object], tuple[str, ...]]] = {
    "negative_epoch": (_set("epoch", -3), ("'epoch'", "-3")),
    "epoch_far_past_the_end": (_set("epoch", 10_000), ("'epoch'", "10000")),
    "stage_epoch_past_the_stage": (_set("stage_epoch", 50), ("'stage_epoch'", "[1, 1]")),
    "stage_epoch_zero": (_set("stage_epoch", 0), ("'stage_epoch'",)),
    "stage_index_past_the_recipe": (_set("stage_index", 4), ("'stage_index'", "the recipe has 1 stage")),
    "stage_index_negative": (_set("stage_index", -1), ("'stage_index'",)),
    "stage_index_not_an_integer": (_set("stage_index", "0"), ("'stage_index'",)),
    "stage_index_a_boolean": (_set("stage_index", False), ("'stage_index'",)),
    "stage_name_of_another_recipe": (_set("stage_name", "fusion"), ("'stage_name'", "fusion")),
    "format_unknown": (_set("format", 7), ("'format'",)),
    "weight_of_the_wrong_shape": (
        lambda s: s["model"].update({_first_weight(s): torch.zeros(3, 3)}),
        ("'model.", "shape (3, 3)"),
    ),
    "weight_of_the_wrong_dtype": (
        lambda s: s["model"].update({_first_weight(s): s["model"][_first_weight(s)].double()}),
        ("'model.", "float64"),
    ),
    "weight_missing": (lambda s: s["model"].pop(_first_weight(s)), ("'model'",)),
    "weight_not_finite": (
        lambda s: s["model"][_first_weight(s)].view(-1).__setitem__(0, math.nan),
        ("'model.", "finite"),
    ),
    "best_missing": (_set("best", None), ("'best'",)),
    "best_epoch_in_the_future": (_set("best.epoch", 9), ("'best.epoch'",)),
    "best_value_nan": (_set("best.value", math.nan), ("'best.value'",)),
    "optimizer_of_another_size": (
        lambda s: s["optimizer"]["param_groups"][0]["params"].pop(),
        ("'optimizer.param_groups'",),
    ),
    "optimizer_state_of_the_wrong_shape": (
        lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(2, 2)),
        ("'optimizer.state[0].exp_avg'",),
    ),
    "scheduler_missing": (_set("scheduler", None), ("'scheduler'",)),
    "scheduler_negative": (_set("scheduler.last_epoch", -5), ("'scheduler'",)),
    "rng_torch_wrong": (_set("rng.torch", torch.zeros(3)), ("'rng.torch'",)),
    "rng_numpy_wrong": (_set("rng.numpy.keys", torch.zeros(5, dtype=torch.int64)), ("'rng.numpy'",)),
    "rng_python_wrong": (_set("rng.python", (3, (1, 2), None)), ("'rng.python'",)),
    "scores_not_a_mapping": (_set("scores", [1, 2]), ("'scores'",)),
    "meta_of_another_task": (_set("meta.task", "classification"), ("'meta.task'",)),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_crafted_checkpoint_fields_are_refused_before_the_run_folder_is_touched(case, trained, workspace, capsys):
    run = _resumable(trained, workspace)
    edit, fragments = CHECKPOINT_CASES[case]
    _edit_checkpoint(run, "last.pt", edit)
    line = _assert_user_error(["train", "--resume", str(run), "-q"], capsys, ("last.pt", *fragments), workspace)
    assert "checkpoint" in line
    assert not (run / LOCK_NAME).exists()


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda run: (run / "checkpoints" / "best.pt").unlink(), ("best.pt", "does not exist")),
        (
            lambda run: _edit_checkpoint(run, "best.pt", _shrink_first_weight),
            ("best.pt", "shape (2,)"),
        ),
    ],
    ids=["best_missing", "best_of_the_wrong_shape"],
)
def test_a_resume_refuses_a_bad_best_checkpoint_before_training(edit, fragments, trained, workspace, capsys):
    run = _resumable(trained, workspace)
    edit(run)
    _assert_user_error(["train", "--resume", str(run), "-q"], capsys, fragments, workspace)


def test_a_history_that_is_not_csv_is_one_line(trained, workspace, capsys):
    run = _resumable(trained, workspace)
    (run / "history.csv").write_text("epoch,loss\nthree,1\n")
    _assert_user_error(["train", "--resume", str(run), "-q"], capsys, ("history.csv", "'epoch'"), workspace)


def test_history_keeps_the_rows_a_valid_checkpoint_implies(tmp_path):
    log = HistoryLog(tmp_path / "history.csv")
    for e in (1, 2, 3):
        log.append({"epoch": e, "loss": 0.1 * e})
    log.truncate(2)
    assert [int(r["epoch"]) for r in HistoryLog(tmp_path / "history.csv").rows] == [1, 2]


def test_a_second_resume_is_refused_while_the_first_runs(trained, workspace, capsys):
    run = _resumable(trained, workspace)
    (run / LOCK_NAME).write_text(f"{os.getpid()} {socket.gethostname()}\n")  # a live holder: this process
    _assert_user_error(["train", "--resume", str(run), "-q"], capsys, (LOCK_NAME, "in use by process"), workspace)
    (run / LOCK_NAME).write_text(f"{os.getpid()} another-host\n")  # a process that cannot be checked
    _assert_user_error(["train", "--resume", str(run), "-q"], capsys, ("another-host",), workspace)
    experiment = workspace / "exp"  # an experiment folder is locked the same way
    experiment.mkdir()
    (experiment / LOCK_NAME).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    argv = ["experiment", "loss-study", "--resume", str(experiment), "-q"]
    _assert_user_error(argv, capsys, ("exp", "in use by process"), workspace)


def test_a_stale_lock_and_stale_temporaries_are_cleared_on_the_next_start(trained, workspace):
    run = _resumable(trained, workspace)
    dead = _dead_pid()
    (run / LOCK_NAME).write_text(f"{dead} {socket.gethostname()}\n")
    for stale in (run / f".history.csv.tmp-{dead}", run / "checkpoints" / f".last.pt.tmp-{dead}"):
        stale.write_bytes(b"half a write")
    live = run / "checkpoints" / f".best.pt.tmp-{os.getpid()}"  # a write in progress: kept
    live.write_bytes(b"in progress")
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert (run / "metrics.json").is_file() and not (run / LOCK_NAME).exists()
    assert sorted(p.name for p in run.rglob(".*.tmp-*")) == [live.name]


def test_run_lock_is_exclusive_and_released(tmp_path):
    with run_lock(tmp_path) as path:
        assert path.read_text().split()[0] == str(os.getpid())
        with pytest.raises(RunDirError, match="in use by process"), run_lock(tmp_path):
            pass
    assert not path.exists()
    assert remove_stale_temporaries(tmp_path / "missing") == []


# ============================================================================ 6: non-finite training
def test_an_infinite_learning_rate_never_saves_nan_weights(workspace, capsys):
    cfg = _write_config(workspace / "t.yaml", workspace / "data")
    argv = ["train", str(cfg), "--out", str(workspace / "runs"), *TRAIN, "--set", "lr=.inf", "--set", "epochs=2"]
    line = _assert_user_error(argv, capsys, ("non-finite", "stopped"), workspace)
    assert "no checkpoint was written" in line
    (run,) = (p for p in (workspace / "runs").iterdir() if p.name.startswith("tiny-"))
    assert not list((run / "checkpoints").iterdir()), "a checkpoint of non-finite weights was saved"


def test_a_nan_validation_loss_stops_and_keeps_the_last_good_checkpoint(workspace, capsys, monkeypatch):
    from medbalance.engine.engine import Engine

    evaluate = Engine.evaluate
    calls = []

    def nan_second_time(self, loader, *, stage=None, on_batch=None):
        scores = evaluate(self, loader, stage=stage, on_batch=on_batch)
        if stage is not None:
            calls.append(1)
            if len(calls) == 2:
                scores["loss"] = math.nan
        return scores

    monkeypatch.setattr(Engine, "evaluate", nan_second_time)
    cfg = _write_config(workspace / "t.yaml", workspace / "data")
    argv = ["train", str(cfg), "--out", str(workspace / "runs"), *TRAIN, "--set", "epochs=3"]
    line = _assert_user_error(argv, capsys, ("val_loss became nan", "epoch 2", "last.pt", "is kept"), workspace)
    assert "stage 'train'" in line
    (run,) = (p for p in (workspace / "runs").iterdir() if p.name.startswith("tiny-"))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 1


def test_export_refuses_non_finite_weights(trained, workspace, capsys):
    run = _copy_run(trained, workspace)
    path = run / "checkpoints" / "best.pt"
    state = load_checkpoint(path)
    state["model"][_first_weight(state)].view(-1)[0] = math.inf
    torch.save(state, path)
    _assert_user_error(["export", str(run), "-q"], capsys, ("best.pt", "non-finite weights"), workspace)
    assert not (run / "export").exists()


# ============================================================================ 7: one line, not a traceback
def test_a_real_full_disk_during_a_checkpoint_is_one_line(workspace, capsys):
    """torch's zip writer turns ENOSPC into a RuntimeError: still one line, and no torn temporary file."""
    with _tmpfs(workspace / "small", "40k") as small:
        cfg = _write_config(workspace / "t.yaml", workspace / "data")
        argv = ["train", str(cfg), "--out", str(small), *TRAIN]
        line = _assert_user_error(argv, capsys, ("cannot write", ".pt", "No space left on device"), workspace)
        assert "checkpoints" in line
        assert not list(small.rglob(".*.tmp-*")) and not list(small.rglob("metrics.json"))


@pytest.mark.slow  # exports through ONNX or torch.export: 5-8 s on the shared machine
def test_export_on_a_full_disk_leaves_no_torn_file(trained, workspace, capsys):
    run = _copy_run(trained, workspace)
    with _tmpfs(workspace / "small", "8k") as small:
        argv = ["export", str(run), "--out", str(small / "model.onnx"), "--no-check", "-q"]
        _assert_user_error(argv, capsys, ("model.onnx", "cannot write", "No space left on device"), workspace)
        assert not list(small.iterdir()), "a torn export was left behind"


def _nested_yaml(ws: Path) -> list[str]:
    (ws / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    return ["train", str(ws / "deep.yaml"), "--out", str(ws / "runs")]


CONFIG_CASES: dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...]]] = {
    "deeply_nested_yaml": (_nested_yaml, ("deep.yaml", "nested too deeply")),
    "deeply_nested_set": (
        lambda ws: ["inspect", "demo", "--set", "data.size=" + "[" * 5000 + "]" * 5000],
        ("--set data.size", "cannot parse"),
    ),
    "devices_minus_one": (
        lambda ws: [
            "train",
            str(_write_config(ws / "t.yaml", ws / "data")),
            "--out",
            str(ws / "runs"),
            *TRAIN,
            "--set",
            "devices=-1",
            "--set",
            "device=cpu",
        ],
        ("devices=-1",),
    ),
    "size_of_tens_of_gb_train": (
        lambda ws: ["train", "demo", "--out", str(ws / "runs"), *TRAIN, "--set", "data.size=300000"],
        ("data.size=300000", "needs about", "TiB of memory"),
    ),
    "size_of_tens_of_gb_inspect": (
        lambda ws: ["inspect", "longtail", "--set", "data.size=100000", "-q"],
        ("data.size=100000", "needs about"),
    ),
    "size_of_tens_of_gb_folder": (
        lambda ws: [
            "train",
            str(_write_config(ws / "t.yaml", ws / "data")),
            "--out",
            str(ws / "runs"),
            *TRAIN,
            "--set",
            "data.size=200000",
        ],
        ("data.size=200000", "needs about"),
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_machine_limits_and_hostile_configs_are_one_line(case, workspace, capsys):
    make_argv, fragments = CONFIG_CASES[case]
    _assert_user_error(make_argv(workspace), capsys, fragments, workspace)


def test_memory_helpers():
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(3 * 2**40) == "3.0 TiB"
    check_allocation(1024, what="x")
    with pytest.raises(DataError, match="'x' needs about 8.0 EiB|'x' needs about 8192.0 PiB"):
        check_allocation(2**63, what="'x'")
    with pytest.raises(ConfigError):
        check_allocation(2**63, what="x", error=ConfigError)


def test_training_error_is_a_user_error():
    from medbalance.errors import USER_ERRORS

    assert TrainingError in USER_ERRORS and RunDirError in USER_ERRORS
