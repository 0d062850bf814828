"""nnU-Net v2's raw layout (`kind: nnunet`), class names (`data.classes`) and subject grouping (`data.groups`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from PIL import Image

from medbalance.cli.main import main
from medbalance.config import parse_config
from medbalance.data.build import build_splits, case_groups
from medbalance.data.folds import read_splits
from medbalance.data.readers.nnunet import channel_cases, read_dataset_json, read_nnunet
from medbalance.engine.run import load_run, predict_image
from medbalance.errors import ConfigError, DataError

LABELS_2D = {"background": 0, "vessel": 1, "lesion": [2], "ignore": 3}
TINY = {
    "epochs": 1,
    "batch_size": 2,
    "steps_per_epoch": 2,
    "progress": False,
    "num_workers": 0,
    "model": {"name": "unet", "base_channels": 4, "depth": 2},
    "loss": ["dice", "ce"],
}


def _dataset_json(root: Path, **fields) -> None:
    (root / "dataset.json").write_text(json.dumps(fields))


def _write_2d(root: Path, n: int = 8) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two-channel PNG cases `<subject>_<side>`, two sides per subject; labels 0-2 plus ignore 3."""
    rng = np.random.default_rng(0)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True)
    cases = {}
    for i in range(n):
        case = f"{i // 2:03d}_{'left' if i % 2 == 0 else 'right'}"
        h, w = 24 + 4 * (i % 3), 28 - 2 * (i % 2)
        labels = np.zeros((h, w), np.uint8)
        labels[4:12, 5:15] = 1
        labels[14:18, 8 + i % 4 : 14 + i % 4] = 2
        labels[0, :] = 3  # the ignored border row
        image = rng.integers(0, 60, (2, h, w)).astype(np.uint8)
        image[0] += (100 * (labels == 1) + 150 * (labels == 2)).astype(np.uint8)
        image[1] += (120 * (labels == 2)).astype(np.uint8)
        for c in range(2):
            Image.fromarray(image[c]).save(root / "imagesTr" / f"{case}_{c:04d}.png")
        Image.fromarray(labels).save(root / "labelsTr" / f"{case}.png")
        cases[case] = (image, labels)
    _dataset_json(
        root, channel_names={"0": "red-free", "1": "infrared"}, labels=LABELS_2D, numTraining=n, file_ending=".png"
    )
    return cases


def _write_3d(root: Path, n: int = 5) -> None:
    """One-channel int16 NIfTI volumes with spacing (z, y, x) = (2.5, 0.9, 0.8); two unlabelled test cases."""
    rng = np.random.default_rng(1)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True)
    for i in range(n + 2):
        shape = (8 + i % 2 * 2, 16, 16 + 2 * (i % 3))
        zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
        inside = (zz - shape[0] / 2) ** 2 / 6 + (yy - 8) ** 2 / 20 + (xx - shape[2] / 2) ** 2 / 20 <= 1
        labels = inside.astype(np.uint8)
        image = (rng.normal(0, 15, shape) + 80 * labels - 200).astype(np.int16)
        folder, case = ("imagesTr", f"vol_{i:03d}") if i < n else ("imagesTs", f"new_{i:03d}")
        arrays = [(image, root / folder / f"{case}_0000.nii.gz")]
        if i < n:
            arrays.append((labels, root / "labelsTr" / f"{case}.nii.gz"))
        for arr, path in arrays:
            itk = sitk.GetImageFromArray(arr)
            itk.SetSpacing((0.8, 0.9, 2.5))
            sitk.WriteImage(itk, str(path))
    labels = {"background": 0, "organ": 1}
    _dataset_json(root, channel_names={"0": "CT"}, labels=labels, numTraining=n, file_ending=".nii.gz")


def _config(tmp_path: Path, data: dict, **extra) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"name": "nn", **TINY, **extra, "data": data}))
    return path


def _classes_in(cases_csv: Path) -> set[str]:
    return {row["class"] for row in csv.DictReader(cases_csv.read_text().splitlines())}


def _only_run(out: Path) -> Path:
    [run] = [p for p in out.iterdir() if p.is_dir()]
    return run


def test_reader_stacks_channels_in_order_and_keeps_names_ignore_label_and_dtype(tmp_path):
    root = tmp_path / "Dataset001_Tiny"
    written = _write_2d(root)
    data = read_nnunet(root)
    assert data.class_names == ("background", "vessel", "lesion")  # ordered by label value, `ignore` left out
    assert data.num_classes == 3 and data.ignore_index == 3 and data.in_channels == 2
    assert data.names == sorted(written)
    for i, case in enumerate(data.names):
        image, labels = written[case]
        assert data.images[i].dtype == np.uint8
        np.testing.assert_array_equal(data.images[i], image)
        np.testing.assert_array_equal(data.target[i], labels)


def test_reader_reads_3d_volumes_with_their_spacing(tmp_path):
    root = tmp_path / "Dataset002_Vol"
    _write_3d(root)
    data = read_nnunet(root)
    assert len(data) == 5 and data.spatial_dims == 3 and data.images[0].dtype == np.int16
    assert data.spacing_of(0) == pytest.approx((2.5, 0.9, 0.8))  # array axis order (z, y, x)
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "imagesTr" / "vol_003_0000.nii.gz")))
    np.testing.assert_array_equal(data.images[3][0], reference)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": {"background": 0, "liver": [1, 2]}}, "label 'liver' is a region [1, 2]"),
        ({"labels": {"background": 0, "liver": 2}}, "'labels' must be consecutive 0..1, found [0, 2]"),
        ({"labels": {"bg": 0, "liver": 1}}, "'labels' must give 'background': 0"),
        ({"labels": {"background": 0, "liver": 1, "ignore": 5}}, "the 'ignore' label must be the highest, 2, found 5"),
        ({"labels": {"background": 0, "liver": "one"}}, "label 'liver' must be an integer"),
        ({"channel_names": {"1": "CT"}}, "'channel_names' keys must be 0..0"),
        ({"numTraining": 0}, "'numTraining' must be a positive integer"),
        ({"file_ending": "nii"}, "'file_ending' must be a suffix"),
        ({"file_ending": None, "drop": "file_ending"}, "missing field 'file_ending'"),
    ],
)
def test_bad_dataset_json_fields_are_one_line_errors(tmp_path, change, message):
    fields = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    fields.update(change)
    fields.pop(change.get("drop", "drop"), None)
    _dataset_json(tmp_path, **fields)
    with pytest.raises(DataError) as err:
        read_dataset_json(tmp_path / "dataset.json")
    assert message in str(err.value) and "dataset.json" in str(err.value) and "\n" not in str(err.value)


def test_a_single_label_region_counts_as_that_label(tmp_path):
    labels = {"background": [0], "tumour": [1]}
    _dataset_json(tmp_path, channel_names={"0": "T2"}, labels=labels, numTraining=1, file_ending=".png")
    assert read_dataset_json(tmp_path / "dataset.json")["classes"] == ["background", "tumour"]


def test_layout_errors_name_the_file_through_the_cli(tmp_path, capsys):
    root = tmp_path / "Dataset001_Tiny"
    _write_2d(root, n=4)
    (root / "imagesTr" / "001_left_0001.png").unlink()
    assert main(["inspect", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: case '001_left' has no channel file '001_left_0001.png' in '{root / 'imagesTr'}'"
    _dataset_json(root, channel_names={"0": "a", "1": "b"}, labels=LABELS_2D, numTraining=5, file_ending=".png")
    assert main(["inspect", str(root)]) == 2
    assert "numTraining 5 but" in capsys.readouterr().err
    nowhere = tmp_path / "Dataset009_Nowhere"
    cfg = _config(tmp_path, {"kind": "nnunet", "path": str(nowhere)})
    assert main(["train", str(cfg), "--out", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err == f"error: '{nowhere}' has no dataset.json (expected nnU-Net's raw layout)\n"
    assert not (tmp_path / "runs").exists()


def test_a_label_value_dataset_json_does_not_name_is_refused(tmp_path):
    root = tmp_path / "Dataset001_Tiny"
    written = _write_2d(root, n=2)
    case = sorted(written)[1]
    labels = written[case][1].copy()
    labels[5, 5] = 7
    Image.fromarray(labels).save(root / "labelsTr" / f"{case}.png")
    with pytest.raises(DataError, match=f"{case}.png' holds value 7, which dataset.json's 'labels' does not name"):
        read_nnunet(root)


def test_2d_round_trip_names_from_dataset_json_and_ignore_label_honoured(tmp_path, capsys):
    root = tmp_path / "Dataset001_Tiny"
    written = _write_2d(root)
    data = {"kind": "nnunet", "path": str(root), "val_fraction": 0.25, "test_fraction": 0.25}
    cfg = _config(tmp_path, data, patch_size=[16, 16])
    assert main(["train", str(cfg), "--out", str(tmp_path / "runs"), "-q"]) == 0
    run = _only_run(tmp_path / "runs")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["class_names"] == ["background", "vessel", "lesion"]
    assert {"vessel", "lesion"} <= set(metrics["test"]["cases"]["per_class"])
    assert _classes_in(run / "evaluations" / "test" / "cases.csv") >= {"vessel", "lesion"}
    # ignore label 3 is left out of the scores: the confusion matrix counts exactly the other pixels
    test_cases = json.loads((run / "splits.json").read_text())["test_names"]
    scored = sum(int((written[c][1] != 3).sum()) for c in test_cases)
    assert np.asarray(metrics["confusion"]["matrix"]).sum() == scored
    # the report and inspect show the names too
    assert "lesion" in (run / "report.md").read_text()
    assert main(["inspect", str(root), "--split", "all"]) == 0
    assert "vessel" in capsys.readouterr().out
    # predict stacks each case's channel files; a case whose channel 1 is missing is refused
    image = written["000_left"][0]
    inputs = {"100_left": image, "100_right": np.ascontiguousarray(image[::-1])}  # the same case, channels swapped
    for case, channels in inputs.items():
        for c in range(2):
            Image.fromarray(channels[c]).save(root / "imagesTs" / f"{case}_{c:04d}.png")
    out = tmp_path / "pred"
    assert main(["predict", str(run), "--input", str(root / "imagesTs"), "--out", str(out), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["100_left.png", "100_right.png"]
    loaded = load_run(run)
    for case, channels in inputs.items():  # the reference: the stacked array given to the network directly
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{case}.png")), predict_image(loaded, channels)[1])
    (root / "imagesTs" / "100_right_0001.png").rename(root / "imagesTs" / "100_right_0002.png")
    assert main(["predict", str(run), "--input", str(root / "imagesTs"), "--out", str(tmp_path / "p2"), "-q"]) == 2
    assert "case '100_right' has channel files [0, 2]; expected 0..1" in capsys.readouterr().err
    assert not (tmp_path / "p2").exists()
    # evaluate on the whole dataset folder (every labelled case)
    assert main(["evaluate", str(run), "--data", str(root), "-q"]) == 0
    [folder] = list((run / "evaluations").glob("eval-*"))
    scores = json.loads((folder / "scores.json").read_text())
    assert scores["split"] == "nnunet" and scores["scores"]["cases"]["num_cases"] == len(written)


def test_3d_round_trip_predicts_images_ts_with_their_geometry(tmp_path):
    root = tmp_path / "Dataset002_Vol"
    _write_3d(root)
    data = {"kind": "nnunet", "path": str(root), "val_fraction": 0.2, "test_fraction": 0.2}
    model = {"name": "unet", "spatial_dims": 3, "base_channels": 4, "depth": 2}
    cfg = _config(tmp_path, data, patch_size=[8, 16, 16], model=model)
    assert main(["train", str(cfg), "--out", str(tmp_path / "runs"), "-q"]) == 0
    run = _only_run(tmp_path / "runs")
    assert json.loads((run / "metrics.json").read_text())["class_names"] == ["background", "organ"]
    out = tmp_path / "pred"
    assert main(["predict", str(run), "--input", str(root / "imagesTs"), "--out", str(out), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["new_005.nii.gz", "new_006.nii.gz"]  # nnU-Net's names
    for case in ("new_005", "new_006"):
        mask = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        image = sitk.ReadImage(str(root / "imagesTs" / f"{case}_0000.nii.gz"))
        assert mask.GetSize() == image.GetSize() and mask.GetSpacing() == pytest.approx(image.GetSpacing())
    assert main(["evaluate", str(run), "--data", str(cfg), "-q"]) == 0
    [folder] = list((run / "evaluations").glob("eval-*"))
    assert json.loads((folder / "cases.json").read_text())["summary"]["num_cases"] == 1


def test_fold_k_of_splits_final_json_gives_train_and_val(tmp_path, capsys):
    root = tmp_path / "Dataset001_Tiny"
    cases = sorted(_write_2d(root, n=6))
    folds = [{"train": cases[2:], "val": cases[:2]}, {"train": cases[:4], "val": cases[4:]}]
    (root / "splits_final.json").write_text(json.dumps(folds))
    assert read_splits(root / "splits_final.json") == folds
    splits = build_splits(parse_config({"data": {"kind": "nnunet", "path": str(root), "fold": 1}}))
    assert splits.train.names == cases[:4] and splits.val.names == cases[4:] and splits.test is None
    with pytest.raises(DataError, match="data.fold is 2 but .* holds 2 folds"):
        build_splits(parse_config({"data": {"kind": "nnunet", "path": str(root), "fold": 2}}))
    with pytest.raises(DataError, match="data.fold takes train / val from splits_final.json"):
        build_splits(parse_config({"data": {"kind": "nnunet", "path": str(root), "fold": 0, "test_fraction": 0.2}}))
    assert main(["inspect", str(root), "--set", "data.fold=1", "--split", "val", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_images"] == 2
    (root / "splits_final.json").write_text(json.dumps([{"train": ["nobody"], "val": cases[:1]}]))
    with pytest.raises(DataError, match="names case 'nobody', which labelsTr does not hold"):
        build_splits(parse_config({"data": {"kind": "nnunet", "path": str(root), "fold": 0}}))
    (root / "splits_final.json").write_text(json.dumps([{"train": cases}]))
    with pytest.raises(DataError, match=r"fold 0 must be"):
        read_splits(root / "splits_final.json")


def _folder(root: Path, stems: list[str], label: int = 1) -> Path:
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for stem in stems:
        mask = np.zeros((16, 16), np.uint8)
        mask[4:10, 4:10] = label
        Image.fromarray((mask * 40).astype(np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    return root


def _subjects_of(splits, pattern: str = r"^(\d+)_") -> list[set[str]]:
    parts = [splits.train, splits.val] + ([splits.test] if splits.test is not None else [])
    return [set(case_groups(p.names, pattern)) for p in parts]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_groups_by_pattern_keep_each_subject_in_one_split(tmp_path, seed):
    stems = [f"{s:03d}_{side}" for s in range(10) for side in ("left", "right")]
    root = _folder(tmp_path / "eyes", stems)
    data = {
        "kind": "folder",
        "path": str(root),
        "groups": r"^(\d+)_",
        "val_fraction": 0.2,
        "test_fraction": 0.2,
        "seed": seed,
        "cache": False,
    }
    subjects = _subjects_of(build_splits(parse_config({"data": data})))
    assert sum(len(s) for s in subjects) == 10 and len(set().union(*subjects)) == 10  # disjoint, complete
    # the ungrouped split of the same seed separates some pair: grouping is what keeps them together
    ungrouped = build_splits(parse_config({"data": {**data, "groups": None}}))
    assert sum(len(s) for s in _subjects_of(ungrouped)) > 10


def test_groups_from_a_csv_and_its_errors(tmp_path):
    stems = [f"eye{i}" for i in range(8)]
    root = _folder(tmp_path / "eyes", stems)
    (root / "groups.csv").write_text("case,group\n" + "".join(f"eye{i},child{i // 2}\n" for i in range(8)))
    data = {
        "kind": "folder",
        "path": str(root),
        "groups": "groups.csv",
        "val_fraction": 0.25,
        "test_fraction": 0.25,
        "cache": False,
    }
    splits = build_splits(parse_config({"data": data}))
    children = [{f"child{int(n[3:]) // 2}" for n in part.names} for part in (splits.train, splits.val, splits.test)]
    assert sum(map(len, children)) == 4 and len(set().union(*children)) == 4
    (root / "groups.csv").write_text("case,group\n" + "".join(f"eye{i},child{i // 2}\n" for i in range(7)))
    with pytest.raises(DataError, match="has no group for case 'eye7'"):
        build_splits(parse_config({"data": data}))


def test_group_pattern_errors_are_one_line(tmp_path, capsys):
    root = _folder(tmp_path / "eyes", ["001_left", "001_right", "left_002", "003_left"])
    data = {"kind": "folder", "path": str(root), "groups": r"^(\d+)_", "cache": False}
    with pytest.raises(DataError, match=r"pattern '\^\(\\d\+\)_' does not match the file stem 'left_002'"):
        build_splits(parse_config({"data": data}))
    one = _folder(tmp_path / "one", ["001_left", "001_right"])
    with pytest.raises(DataError, match="puts all 2 cases in one group '001'"):
        build_splits(parse_config({"data": {**data, "path": str(one)}}))
    assert main(["inspect", str(_config(tmp_path, data))]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(ConfigError, match="one capture group, found 0"):
        parse_config({"data": {"kind": "folder", "path": str(root), "groups": r"^\d+_"}})
    with pytest.raises(ConfigError, match="unknown key 'group' under 'data'.*did you mean 'groups'"):
        parse_config({"data": {"kind": "nnunet", "path": str(root), "group": r"^(\d+)"}})


def test_nnunet_groups_keep_both_sides_of_a_subject_together(tmp_path):
    root = tmp_path / "Dataset001_Tiny"
    _write_2d(root, n=8)
    data = {"kind": "nnunet", "path": str(root), "groups": r"^(\d+)_", "val_fraction": 0.25, "test_fraction": 0.25}
    subjects = _subjects_of(build_splits(parse_config({"data": data})))
    assert sum(len(s) for s in subjects) == 4 and len(set().union(*subjects)) == 4


def test_classes_name_a_folder_run_everywhere_and_a_wrong_count_is_one_line(tmp_path, capsys):
    root = _folder(tmp_path / "lesions", [f"c{i}" for i in range(6)])
    data = {
        "kind": "folder",
        "path": str(root),
        "val_fraction": 0.34,
        "test_fraction": 0.34,
        "classes": ["background", "lesion"],
    }
    cfg = _config(tmp_path, data)
    assert main(["train", str(cfg), "--out", str(tmp_path / "runs"), "-q"]) == 0
    run = _only_run(tmp_path / "runs")
    assert json.loads((run / "metrics.json").read_text())["class_names"] == ["background", "lesion"]
    assert _classes_in(run / "evaluations" / "test" / "cases.csv") == {"lesion"}
    assert main(["inspect", str(cfg)]) == 0
    assert "lesion" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--data", str(root), "-q"]) == 0  # a plain folder: the run's names
    [folder] = list((run / "evaluations").glob("eval-*"))
    assert _classes_in(folder / "cases.csv") == {"lesion"}
    bad = _config(tmp_path, {**data, "classes": ["background", "lesion", "cyst"]})
    assert main(["train", str(bad), "--out", str(tmp_path / "runs2"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.classes lists 3 names but the data has 2 classes" in err


def test_classes_override_a_reader_with_names_and_name_classification_folders(tmp_path):
    root = tmp_path / "Dataset001_Tiny"
    _write_2d(root, n=4)
    names = ["bg", "artery", "bleed"]
    splits = build_splits(parse_config({"data": {"kind": "nnunet", "path": str(root), "classes": names}}))
    assert splits.train.class_names == splits.val.class_names == tuple(names)
    binary = {"kind": "nnunet", "path": str(root), "binary": True, "classes": ["bg", "anything"]}
    assert build_splits(parse_config({"data": binary})).train.class_names == ("bg", "anything")
    folders = tmp_path / "xray"
    for k, cls in enumerate(("a_normal", "b_sick")):
        (folders / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), 60 * k + i, np.uint8)).save(folders / cls / f"{i}.png")
    data = {
        "kind": "folder",
        "path": str(folders),
        "task": "classification",
        "classes": ["normal", "pneumonia"],
        "cache": False,
    }
    assert build_splits(parse_config({"data": data})).train.class_names == ("normal", "pneumonia")
    with pytest.raises(ConfigError, match="at least two distinct non-empty class names"):
        parse_config({"data": {**data, "classes": ["normal", "normal"]}})


def test_channel_cases_group_files_by_case_in_channel_order(tmp_path):
    files = [tmp_path / n for n in ("b_0000.nii.gz", "a_0001.nii.gz", "a_0000.nii.gz", "a_b_0000.nii.gz")]
    cases = channel_cases(files)
    assert [(c.name, [f.name for f in fs]) for c, fs in cases] == [
        ("a.nii.gz", ["a_0000.nii.gz", "a_0001.nii.gz"]),
        ("a_b.nii.gz", ["a_b_0000.nii.gz"]),
        ("b.nii.gz", ["b_0000.nii.gz"]),
    ]
    with pytest.raises(DataError, match=r"'scan.nii.gz' is not named <case>_<XXXX>.nii.gz"):
        channel_cases([tmp_path / "scan.nii.gz"])
