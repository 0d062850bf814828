"""Issue 9, fuzzing: random bytes and arrays into every reader, random tensors into every loss.

The contract under test: a reader either returns what it documents or raises one of the
error types of :mod:`medbalance.errors`; a loss either returns a tensor or raises
``ValueError`` / ``TypeError`` from its argument checks. Anything else (an ``IndexError``
from deep inside numpy, a SimpleITK ``RuntimeError``, a crash) is a bug.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from medbalance import errors
from medbalance.config import CamusData
from medbalance.data.folder import read_classification_folder, read_segmentation_folder
from medbalance.data.io import read_image, read_mask
from medbalance.data.medical import read_slices
from medbalance.data.readers.camus import build_camus
from medbalance.data.readers.classification import read_medmnist
from medbalance.data.readers.nuclei import rasterize_monusac_xml, read_conic
from medbalance.losses import LOSSES, build_loss

#: What a reader may raise: the documented error classes (every one a ValueError or RuntimeError).
READER_ERRORS = (errors.ConfigError, errors.DataError, errors.CheckpointError, errors.RunDirError)
LOSS_ERRORS = (ValueError, TypeError)
#: Examples per test: 25 in CI; MEDBALANCE_FUZZ_EXAMPLES=2000 for a long campaign (docs/reliability.md).
FUZZ = settings(
    max_examples=int(os.environ.get("MEDBALANCE_FUZZ_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,  # the same inputs on every CI run; MEDBALANCE_FUZZ_EXAMPLES=N for a longer campaign
)


def _valid_files() -> dict[str, bytes]:
    """One small valid file per format: the seeds that mutations start from."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    out: dict[str, bytes] = {}
    for suffix, fmt in ((".png", "PNG"), (".jpg", "JPEG"), (".tif", "TIFF"), (".bmp", "BMP"), (".gif", "GIF")):
        buf = io.BytesIO()
        Image.fromarray(grey).save(buf, format=fmt)
        out[suffix] = buf.getvalue()
    buf = io.BytesIO()
    np.save(buf, grey.astype(np.float32) / 255)
    out[".npy"] = buf.getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".mha", ".nii", ".nii.gz", ".nrrd"):
            path = Path(tmp) / f"seed{suffix}"
            sitk.WriteImage(sitk.GetImageFromArray(grey.astype(np.int16)), str(path))
            out[suffix] = path.read_bytes()
    return out


VALID = _valid_files()
SUFFIXES = sorted(VALID) + [".mhd"]


@st.composite
def file_bytes(draw, suffix: str) -> bytes:
    """Random bytes, or a valid file of ``suffix`` with bytes overwritten, cut or appended."""
    seed = VALID.get(suffix, b"ObjectType = Image\nNDims = 2\nDimSize = 6 7\nElementType = MET_UCHAR\n")
    kind = draw(st.sampled_from(["random", "flip", "truncate", "append"]))
    if kind == "random":
        return draw(st.binary(max_size=512))
    data = bytearray(seed)
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "append":
        return bytes(data + draw(st.binary(min_size=1, max_size=64)))
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _expect_documented(call, *args, **kwargs):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning, numpy casts
            return call(*args, **kwargs)
    except READER_ERRORS:
        return None


def _check_image(image, channels: int) -> None:
    assert image.dtype == np.float32 and image.ndim == 3 and image.shape[0] == channels
    assert np.isfinite(image).all()


# ----------------------------------------------------------------------------- single files
@pytest.mark.parametrize("suffix", SUFFIXES)
@FUZZ
@given(data=st.data())
def test_file_readers_on_random_and_mutated_bytes(suffix, data, tmp_path):
    path = _write(tmp_path, f"x{suffix}", data.draw(file_bytes(suffix)))
    if suffix == ".mhd":  # the header names its data file
        _write(tmp_path, "x.raw", data.draw(st.binary(max_size=64)))
    channels = data.draw(st.sampled_from([1, 3]))
    image = _expect_documented(read_image, path, channels=channels)
    if image is not None:
        _check_image(image, channels)
    mask = _expect_documented(read_mask, path)
    if mask is not None:
        assert mask.dtype == np.int64 and mask.ndim == 2
    slices = _expect_documented(read_slices, path, channels=channels)
    if slices is not None:
        assert slices[0].ndim == 4 and slices[0].shape[1] == channels and np.isfinite(slices[0]).all()


ARRAY_DTYPES = st.sampled_from(
    [np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]
)


_FIELD = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=30)
_DIMS = st.lists(st.integers(-3, 10**7), min_size=1, max_size=4).map(lambda d: " ".join(map(str, d)))


@FUZZ
@given(
    dims=st.one_of(_FIELD, _DIMS),
    element=st.sampled_from(["MET_UCHAR", "MET_FLOAT", "MET_LONG_LONG", "MET_NONE", "x"]),
    data_file=st.one_of(_FIELD, st.sampled_from(["LOCAL", "LIST", "d.raw", "../d.raw", "/etc/hostname", "d%03d.raw"])),
    extra=st.sampled_from(["", "HeaderSize = -1\n", "HeaderSize = 7\n", "CompressedData = True\n", "HeaderSize = x\n"]),
    raw=st.binary(max_size=64),
)
def test_metaimage_headers_with_hostile_fields(dims, element, data_file, extra, raw, tmp_path_factory):
    """Issue 20: a header's DimSize, ElementType, HeaderSize and ElementDataFile are untrusted."""
    folder = tmp_path_factory.mktemp("mhd")
    (folder / "d.raw").write_bytes(raw)
    header = folder / "h.mhd"
    text = f"ObjectType = Image\nNDims = 2\nDimSize = {dims}\nElementType = {element}\n"
    header.write_text(f"{text}{extra}ElementDataFile = {data_file}\n", encoding="utf-8")
    try:
        read_image(header)
    except READER_ERRORS:
        pass


@FUZZ
@given(array=hnp.arrays(ARRAY_DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_npy_readers_on_random_arrays(array, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, array)
    image = _expect_documented(read_image, path, channels=1)
    if image is not None:
        _check_image(image, 1)
    mask = _expect_documented(read_mask, path)
    if mask is not None:
        assert mask.dtype == np.int64 and mask.ndim == 2


# ----------------------------------------------------------------------------- dataset layouts
@FUZZ
@given(data=st.data())
def test_folder_readers_with_a_random_file(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(3):
        _write(root / "images", f"c{i}.png", VALID[".png"])
        _write(root / "masks", f"c{i}.png", VALID[".png"])
    suffix = data.draw(st.sampled_from(SUFFIXES[:-1]))
    where = data.draw(st.sampled_from(["images", "masks"]))
    (root / where / "c1.png").unlink()
    _write(root / where, f"c1{suffix}", data.draw(file_bytes(suffix)))
    size = data.draw(st.sampled_from([None, 8]))
    _expect_documented(read_segmentation_folder, root, size=size)
    _expect_documented(read_classification_folder, root, size=size)


@FUZZ
@given(
    images=hnp.arrays(ARRAY_DTYPES, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4)),
    labels=hnp.arrays(ARRAY_DTYPES, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4)),
)
def test_conic_reader_on_random_arrays(images, labels, tmp_path_factory):
    root = tmp_path_factory.mktemp("conic")
    np.save(root / "images.npy", images)
    np.save(root / "labels.npy", labels)
    _expect_documented(read_conic, root)


@FUZZ
@given(data=st.data())
def test_medmnist_reader_on_random_npz(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("medmnist") / "pathmnist.npz"
    if data.draw(st.booleans()):
        path.write_bytes(data.draw(st.binary(max_size=256)))
    else:
        shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=3)
        arrays = {
            f"{split}_{what}": data.draw(hnp.arrays(ARRAY_DTYPES, shapes))
            for split in ("train", "val", "test")
            for what in ("images", "labels")
            if data.draw(st.integers(0, 9)) > 0  # now and then a key is missing
        }
        np.savez(path, **arrays)
    _expect_documented(read_medmnist, path)


XML_PIECES = st.sampled_from(
    [
        "<Annotations>",
        "</Annotations>",
        "<Annotation>",
        "</Annotation>",
        '<Attribute Name="Epithelial"/>',
        "<Regions>",
        "</Regions>",
        "<Region>",
        "</Region>",
        "<Vertices>",
        "</Vertices>",
        '<Vertex X="1.5" Y="2"/>',
        '<Vertex X="nan" Y="1e400"/>',
        '<Vertex X="a"/>',
        "<Attribute/>",
        "&bogus;",
        "\x00",
    ]
)


@FUZZ
@given(
    pieces=st.lists(XML_PIECES | st.text(max_size=8), max_size=30),
    shape=st.tuples(st.integers(0, 6), st.integers(0, 6)),
)
def test_monusac_xml_rasteriser_on_random_xml(pieces, shape, tmp_path_factory):
    path = tmp_path_factory.mktemp("monusac") / "a.xml"
    path.write_text("".join(pieces), encoding="utf-8", errors="surrogatepass")
    labels = _expect_documented(rasterize_monusac_xml, path, shape)
    if labels is not None:
        assert labels.shape == shape


@FUZZ
@given(data=st.data())
def test_camus_reader_with_a_random_frame(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("camus")
    frame = np.arange(36, dtype=np.int16).reshape(6, 6)
    gt = (frame % 4).astype(np.uint8)
    for k in range(3):
        patient = root / f"patient000{k}"
        patient.mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(frame), str(patient / f"patient000{k}_2CH_ED.mha"))
        sitk.WriteImage(sitk.GetImageFromArray(gt), str(patient / f"patient000{k}_2CH_ED_gt.mha"))
    name = data.draw(st.sampled_from(["patient0001_2CH_ED.mha", "patient0001_2CH_ED_gt.mha"]))
    _write(root / "patient0001", name, data.draw(file_bytes(".mha")))
    cfg = CamusData(path=str(root), views=["2CH"], phases=["ED"], size=8, val_fraction=0.34, test_fraction=0.0)
    _expect_documented(build_camus, cfg)


# ----------------------------------------------------------------------------- losses
@st.composite
def loss_inputs(draw):
    """Logits ``(N, C, *spatial)`` and a target that is sometimes right and often wrong."""
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    spatial = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=3)))
    logits = torch.from_numpy(
        draw(
            hnp.arrays(
                np.float32, (n, c, *spatial), elements=st.floats(-50, 50, width=32) | st.sampled_from([0.0, 1e30])
            )
        )
    )
    kind = draw(st.sampled_from(["labels", "labels_ch", "float", "other_shape", "out_of_range", "bool", "nonfinite"]))
    if kind in ("labels", "labels_ch"):
        target = torch.randint(
            0, max(c, 2), (n, *spatial), generator=torch.Generator().manual_seed(draw(st.integers(0, 99)))
        )
        target = target.unsqueeze(1) if kind == "labels_ch" else target
    elif kind == "float":
        target = torch.rand(n, c, *spatial)
    elif kind == "other_shape":
        target = torch.zeros(draw(st.lists(st.integers(0, 3), max_size=4)), dtype=torch.long)
    elif kind == "out_of_range":
        target = torch.full((n, *spatial), draw(st.sampled_from([-7, c, c + 3, 255])), dtype=torch.long)
    elif kind == "bool":
        target = torch.ones(n, *spatial, dtype=torch.bool)
    else:
        target = torch.full((n, c, *spatial), float("nan"))
    counts = draw(st.sampled_from([None, "match", "short", "zeros"]))
    counts = {
        None: [10.0, 1.0],
        "match": [float(10 * (i + 1)) for i in range(max(c, 2))],
        "short": [5.0],
        "zeros": [0.0] * max(c, 2),
    }[counts]
    return logits, target, counts


@pytest.mark.parametrize("name", sorted(LOSSES))
@FUZZ
@given(inputs=loss_inputs())
def test_every_loss_on_random_tensors_raises_only_documented_errors(name, inputs):
    logits, target, counts = inputs
    try:
        loss = build_loss(name, class_counts=counts, binary=logits.shape[1] == 1)
        value = loss(logits, target)
    except LOSS_ERRORS:
        return
    assert isinstance(value, torch.Tensor)
