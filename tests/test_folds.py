"""k-fold cross-validation: nnU-Net's splits_final.json, fold training, out-of-fold scores, fold ensembles."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medbalance.cli.main import main
from medbalance.config import parse_config
from medbalance.data.build import build_splits
from medbalance.data.datasets import ArrayDataset, Splits
from medbalance.data.folds import cv_pool, make_folds, read_splits, write_splits
from medbalance.data.io import read_raw
from medbalance.engine.folds import ensemble_image, load_folds
from medbalance.engine.run import load_run, predict_image
from medbalance.errors import ConfigError, DataError

SIZES = [(40, 52), (48, 48), (36, 44), (44, 40), (52, 36), (40, 40), (48, 36)]


def _folder(root: Path, sizes: list[tuple[int, int]] = SIZES) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, shape in enumerate(sizes):
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        mask = ((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 <= (0.25 * min(shape)) ** 2).astype(np.uint8)
        image = np.clip(60 + 120 * mask + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"case{i}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"case{i}.png")
    return root


def _config(tmp: Path, data: Path, **cv) -> Path:
    cfg = {
        "name": "cv",
        "epochs": 1,
        "batch_size": 2,
        "steps_per_epoch": 2,
        "patch_size": 32,
        "progress": False,
        "device": "cpu",
        "data": {"kind": "folder", "path": str(data), "val_fraction": 0.2, "test_fraction": 0.15, "cache": False},
        "model": {"name": "unet", "base_channels": 4, "depth": 2},
        "loss": ["dice", "ce"],
    }
    if cv:
        cfg["cv"] = cv
    path = tmp / f"config-{len(list(tmp.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


# ----------------------------------------------------------------------------- the split file


def test_make_folds_nnunet_format_every_case_once_in_val_groups_kept_together():
    names = [f"c{i:02d}" for i in range(23)]
    groups = [f"p{i // 3}" for i in range(23)]  # eight patients, three images each (the last two)
    folds = make_folds(names, 5, seed=3, groups=groups)
    assert isinstance(folds, list) and len(folds) == 5
    assert all(isinstance(f, dict) and set(f) == {"train", "val"} for f in folds)
    vals = [n for f in folds for n in f["val"]]
    assert sorted(vals) == names  # each case in exactly one validation fold
    for f in folds:
        assert not set(f["train"]) & set(f["val"])
        assert sorted(f["train"] + f["val"]) == names
        val_patients = {groups[names.index(n)] for n in f["val"]}
        train_patients = {groups[names.index(n)] for n in f["train"]}
        assert not val_patients & train_patients  # a patient never straddles train and val
    # independent of the order the names come in; a new seed gives new folds
    order = np.random.default_rng(0).permutation(23)
    assert make_folds([names[i] for i in order], 5, seed=3, groups=[groups[i] for i in order]) == folds
    assert make_folds(names, 5, seed=4, groups=groups) != folds
    sizes = sorted(len({groups[names.index(n)] for n in f["val"]}) for f in folds)
    assert sizes == [1, 1, 2, 2, 2]  # 8 patients over 5 folds


def test_splits_final_round_trip_and_format(tmp_path):
    folds = make_folds([f"case{i}" for i in range(7)], 3, seed=0)
    path = write_splits(tmp_path / "splits_final.json", folds)
    raw = json.loads(path.read_text())
    assert raw == folds and all(list(f) == ["train", "val"] for f in raw)
    assert read_splits(path) == folds


def test_reads_a_hand_written_nnunet_splits_file_and_rejects_bad_ones(tmp_path):
    # as nnU-Net v2 writes it (save_json, indent 4): fold dicts with train / val lists of case ids
    path = tmp_path / "splits_final.json"
    path.write_text(
        '[\n    {\n        "train": [\n            "a",\n            "b"\n        ],\n'
        '        "val": [\n            "c"\n        ]\n    },\n'
        '    {"train": ["a", "c"], "val": ["b"]}\n]'
    )
    assert read_splits(path) == [{"train": ["a", "b"], "val": ["c"]}, {"train": ["a", "c"], "val": ["b"]}]
    for text, what in [
        ('{"train": []}', "is not a JSON list"),
        ('[{"train": ["a"]}]', "fold 0 of splits file"),
        ('[{"train": ["a"], "val": [1]}]', "'val' of fold 0"),
        ('[{"train": ["a"], "val": ["a"]}]', "in both train and val"),
        ("[{", "cannot read splits file"),
    ]:
        path.write_text(text)
        with pytest.raises(DataError, match=what):
            read_splits(path)
    with pytest.raises(DataError, match="does not exist"):
        read_splits(tmp_path / "missing.json")


def test_pool_renames_repeated_phantom_names_and_uses_recorded_groups():
    def ds(names):
        return ArrayDataset(
            np.zeros((len(names), 1, 4, 4), np.float32),
            np.zeros((len(names), 4, 4), np.int64),
            num_classes=2,
            names=names,
        )

    pool, groups = cv_pool(Splits(ds(["00000", "00001"]), ds(["00000"]), None))
    assert pool.names == ["train-00000", "train-00001", "val-00000"] and groups == pool.names
    pool, groups = cv_pool(Splits(ds(["a_L", "a_R"]), ds(["b_L"]), None, info={"groups": {"a_L": "a", "a_R": "a"}}))
    assert pool.names == ["a_L", "a_R", "b_L"] and groups == ["a", "a", "b_L"]


def _patients_apart(splits, patient) -> None:
    train, val = ({patient(n) for n in d.names} for d in (splits.train, splits.val))
    assert train and val and not train & val


def test_camus_folds_keep_a_patient_together(tmp_path):
    from tests.test_camus import make_camus

    make_camus(tmp_path / "training", range(1, 11))
    for fold in range(3):
        cfg = parse_config(
            {"data": {"kind": "camus", "path": str(tmp_path), "test_fraction": 0.2}, "cv": {"folds": 3, "fold": fold}}
        )
        splits = build_splits(cfg)
        assert len(splits.train) + len(splits.val) == 32  # 8 of the 10 patients, 4 frames each
        _patients_apart(splits, lambda n: n.split("_")[0])
        assert len(splits.val) % 4 == 0


def test_hc18_folds_keep_a_subject_together(shared_data, monkeypatch):
    monkeypatch.setenv("MEDBALANCE_DATA", str(shared_data))
    cfg = parse_config({"data": {"kind": "shared", "name": "hc18_subset", "size": 32}, "cv": {"folds": 5, "fold": 2}})
    splits = build_splits(cfg)
    _patients_apart(splits, lambda n: n.split("_")[0])  # 010_HC and 010_2HC: one subject


def test_cv_config_keys_are_validated_with_suggestions():
    with pytest.raises(ConfigError, match="unknown key 'fodls' under 'cv'.*did you mean 'folds'"):
        parse_config({"cv": {"fodls": 3}})
    with pytest.raises(ConfigError, match="'cv.folds'"):
        parse_config({"cv": {"folds": 1}})
    with pytest.raises(ConfigError, match="fold 5 does not exist"):
        parse_config({"cv": {"folds": 5, "fold": 5}})


def test_fold_split_of_the_pool_test_split_unchanged_normalisation_of_the_fold(tmp_path):
    data = _folder(tmp_path / "data")
    plain = build_splits(parse_config(yaml.safe_load(_config(tmp_path, data).read_text())))
    cfg = parse_config(yaml.safe_load(_config(tmp_path, data, folds=2, fold=1, seed=1).read_text()))
    splits = build_splits(cfg)
    pool = sorted(plain.train.names + plain.val.names)
    expected = make_folds(pool, 2, seed=1)[1]
    assert splits.train.names == expected["train"] and splits.val.names == expected["val"]
    assert splits.test.names == plain.test.names
    # the normalisation is fitted on the fold's own training cases
    train = np.concatenate([np.asarray(splits.train.images[i], np.float64).ravel() for i in range(len(splits.train))])
    norm = splits.info["normalization"]
    assert norm["mean"][0] == pytest.approx(train.mean() / 255, rel=1e-4)


# ----------------------------------------------------------------------------- training


def test_fold_1_trains_on_the_cases_of_a_hand_written_splits_file(tmp_path, capsys):
    data = _folder(tmp_path / "data")
    plain = build_splits(parse_config(yaml.safe_load(_config(tmp_path, data).read_text())))
    pool = sorted(plain.train.names + plain.val.names)
    folds = [{"train": pool[2:], "val": pool[:2]}, {"train": pool[:2] + pool[4:], "val": pool[2:4]}]
    (tmp_path / "splits_final.json").write_text(json.dumps(folds, indent=4))
    config = _config(tmp_path, data, splits=str(tmp_path / "splits_final.json"))
    assert main(["train", str(config), "--fold", "1", "--out", str(tmp_path / "runs"), "-q"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    info = json.loads((run / "splits.json").read_text())
    assert info["train_names"] == folds[1]["train"] and info["val_names"] == folds[1]["val"]
    assert info["cv"]["fold"] == 1 and info["test_names"] == plain.info["test_names"]
    assert read_splits(run / "splits_final.json") == folds
    assert yaml.safe_load((run / "config.yaml").read_text())["cv"]["fold"] == 1
    assert len(json.loads((run / "evaluations" / "test" / "cases.json").read_text())["rows"]) == len(plain.test)

    # a fold the file does not have, a bad --fold, --fold with --resume: one line each, no new folder
    capsys.readouterr()
    assert main(["train", str(config), "--fold", "2", "--out", str(tmp_path / "runs")]) == 2
    assert "fold 2 does not exist" in _error(capsys) and len(list((tmp_path / "runs").iterdir())) == 1
    for bad in ("-1", "x", "1.5"):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", str(config), "--fold", bad])
        assert exit_info.value.code == 2 and "fold number" in _error(capsys)
    assert main(["train", "--resume", str(run), "--fold", "0"]) == 2
    assert "drop CONFIG, --set and --fold" in _error(capsys)
    # drawn folds: five by default
    assert main(["train", str(_config(tmp_path, data)), "--fold", "5", "--out", str(tmp_path / "runs")]) == 2
    assert "fold 5 does not exist: 5 folds are 0 to 4" in _error(capsys)
    # an id of the file that the data does not have
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": ["case0"], "val": ["nope"]}]))
    assert main(["train", str(config), "--fold", "0", "--out", str(tmp_path / "runs")]) == 2
    assert "case 'nope' in 'val' of fold 0" in _error(capsys)
    # every fold in one process: one device
    assert main(["train", str(config), "--fold", "all", "--set", "devices=2", "--out", str(tmp_path / "runs")]) == 2
    assert "on one device" in _error(capsys)
    assert len(list((tmp_path / "runs").iterdir())) == 1


@pytest.fixture(scope="module")
def cv_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("cv")
    data = _folder(tmp / "data")
    config = _config(tmp, data, folds=2, seed=0)
    assert main(["train", str(config), "--fold", "all", "--out", str(tmp / "runs"), "-q"]) == 0
    (cv,) = (tmp / "runs").iterdir()
    return cv


def test_fold_all_writes_every_fold_and_the_out_of_fold_table(cv_dir):
    assert cv_dir.name.startswith("cv-cv-")
    folds = read_splits(cv_dir / "splits_final.json")
    assert len(folds) == 2
    for k, fold in enumerate(folds):
        run = cv_dir / f"fold_{k}"
        assert (run / "metrics.json").is_file() and (run / "checkpoints" / "best.pt").is_file()
        info = json.loads((run / "splits.json").read_text())
        assert info["val_names"] == fold["val"] and info["train_names"] == fold["train"]
    with open(cv_dir / "cv_results" / "cases.csv", newline="") as fh:
        cases = [row["case"] for row in csv.DictReader(fh)]
    pool = sorted(n for f in folds for n in f["val"])
    assert sorted(cases) == pool  # every pool case once (one foreground class), predicted by its own fold
    assert sorted(p.stem for p in (cv_dir / "cv_results" / "predictions").iterdir()) == pool
    summary = json.loads((cv_dir / "cv_results" / "summary.json").read_text())
    assert [f["cases"] for f in summary["per_fold"]] == [len(f["val"]) for f in folds]
    assert summary["out_of_fold"]["num_cases"] == len(pool)
    # the out-of-fold mean Dice is the mean of the per-case rows
    rows = json.loads((cv_dir / "cv_results" / "cases.json").read_text())["rows"]
    dice = [r["dice"] for r in rows if r["dice"] is not None]
    assert summary["out_of_fold"]["mean"]["dice"] == pytest.approx(np.mean(dice))


def test_ensemble_prediction_is_the_mean_of_the_fold_probabilities(cv_dir, tmp_path, capsys):
    data = Path(yaml.safe_load((cv_dir / "config.yaml").read_text())["data"]["path"])
    image_path = data / "images" / "case3.png"
    image, _ = read_raw(image_path)
    runs = [load_run(cv_dir / f"fold_{k}") for k in range(2)]
    each = [predict_image(run, image)[0] for run in runs]
    assert not np.allclose(each[0], each[1])  # two different models: the mean is not either one
    mean = (each[0] + each[1]) / 2
    probs, labels = ensemble_image(load_folds(cv_dir), image)
    np.testing.assert_allclose(probs, mean, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(labels, (mean[0] > 0.5).astype(np.int64))
    # the CLI writes the same mask
    assert main(["predict", str(cv_dir), "--input", str(image_path), "--out", str(tmp_path / "out"), "-q"]) == 0
    written = np.asarray(Image.open(tmp_path / "out" / "case3.png"))
    np.testing.assert_array_equal(written > 0, labels == 1)
    # evaluate scores the ensemble on a labelled folder and writes its per-case table in the CV folder
    assert main(["evaluate", str(cv_dir), "--data", str(data), "-q"]) == 0
    (evaluation,) = (cv_dir / "evaluations").iterdir()
    scores = json.loads((evaluation / "scores.json").read_text())["scores"]
    assert scores["cases"]["num_cases"] == len(SIZES)
    rows = json.loads((evaluation / "cases.json").read_text())["rows"]
    case3 = next(r for r in rows if r["case"] == "case3")
    truth = np.asarray(Image.open(data / "masks" / "case3.png")) > 0
    predicted = labels == 1
    assert case3["dice"] == pytest.approx(2 * (truth & predicted).sum() / (truth.sum() + predicted.sum()))


def test_resume_of_a_cv_folder_trains_the_missing_fold_and_scores_again(cv_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / cv_dir.name
    shutil.copytree(cv_dir, copy, ignore=shutil.ignore_patterns("evaluations"))
    for name in ("fold_0", "cv_results"):
        shutil.rmtree(copy / name)
    (copy / "fold_0").mkdir()  # made, killed before its first checkpoint
    kept = (copy / "fold_1" / "checkpoints" / "best.pt").stat().st_mtime_ns
    data = yaml.safe_load((cv_dir / "config.yaml").read_text())["data"]["path"]
    capsys.readouterr()
    assert main(["predict", str(copy), "--input", data + "/images", "--out", str(tmp_path / "p")]) == 2
    assert "fold 0 of" in _error(capsys)
    assert main(["train", "--resume", str(copy), "-q"]) == 0
    assert (copy / "fold_0" / "metrics.json").is_file() and (copy / "cv_results" / "cases.csv").is_file()
    # fold 1 was kept as it was; the retrained fold 0 repeats the original (seeded, deterministic)
    assert (copy / "fold_1" / "checkpoints" / "best.pt").stat().st_mtime_ns == kept
    assert (copy / "fold_0" / "metrics.json").read_text() == (cv_dir / "fold_0" / "metrics.json").read_text()
    assert (copy / "cv_results" / "cases.csv").read_text() == (cv_dir / "cv_results" / "cases.csv").read_text()


def test_evaluate_without_data_scores_a_cv_folder_out_of_fold_and_a_run_folder_is_refused(cv_dir, capsys):
    before = set((cv_dir / "evaluations").glob("*")) if (cv_dir / "evaluations").exists() else set()
    assert main(["evaluate", str(cv_dir), "-q"]) == 0
    (folder,) = set((cv_dir / "evaluations").glob("*")) - before
    assert (folder / "cases.csv").read_text() == (cv_dir / "cv_results" / "cases.csv").read_text()
    assert json.loads((folder / "summary.json").read_text()) == json.loads(
        (cv_dir / "cv_results" / "summary.json").read_text()
    )
    capsys.readouterr()
    assert main(["evaluate", str(cv_dir / "fold_0")]) == 2
    assert "--data is needed for a run folder" in _error(capsys)


def test_classification_folds_out_of_fold_csv_and_ensemble_of_resized_runs(tmp_path):
    from medbalance.engine.folds import ensemble_arrays, evaluate_ensemble, train_cv
    from medbalance.engine.run import predict_arrays

    cfg = parse_config(
        {
            "name": "lt",
            "epochs": 1,
            "batch_size": 8,
            "device": "cpu",
            "progress": False,
            "data": {
                "kind": "longtail_phantom",
                "size": 16,
                "num_classes": 3,
                "n_max": 9,
                "imbalance_ratio": 3,
                "n_val_per_class": 2,
                "n_test_per_class": 2,
            },
            "model": {"name": "resnet32", "widths": [4, 8, 8], "blocks_per_stage": 1},
            "cv": {"folds": 2, "seed": 5},
        }
    )
    result = train_cv(cfg, out=tmp_path)
    folds = read_splits(result.cv_dir / "splits_final.json")
    with open(result.cv_dir / "cv_results" / "predictions" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["name"] for r in rows) == sorted(n for f in folds for n in f["val"])  # train-/val- ids
    assert all(n.startswith(("train-", "val-")) for f in folds for n in f["val"])
    # the out-of-fold accuracy, recomputed from the rows
    accuracy = np.mean([r["target"] == r["prediction"] for r in rows])
    assert result.summary["out_of_fold"]["accuracy"] == pytest.approx(accuracy)

    runs = load_folds(result.cv_dir)
    test = build_splits(cfg.model_copy(update={"cv": None})).test
    x = np.stack([test.image(i) for i in range(len(test))])
    mean = np.mean([predict_arrays(run, x)[0] for run in runs], axis=0)
    probs, labels = ensemble_arrays(runs, x)
    np.testing.assert_allclose(probs, mean, atol=1e-6)
    np.testing.assert_array_equal(labels, mean.argmax(axis=1))
    scores = evaluate_ensemble(runs, test)
    assert scores["accuracy"] == pytest.approx(np.mean(labels == np.asarray(test.target)))


def test_fold_all_at_a_target_spacing_divides_the_native_pool(tmp_path):
    # the pool was once drawn after the train split was resampled: native val and resampled train images of
    # one shape (HC18's) did not concatenate
    data = _folder(tmp_path / "data", sizes=[(40, 48)] * len(SIZES))
    config = _config(tmp_path, data, folds=2, seed=0)
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["spacing"] = [2, 2]
    cfg["patch_size"] = 16
    config.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(config), "--fold", "all", "--out", str(tmp_path / "runs"), "-q"]) == 0
    (cv,) = (tmp_path / "runs").iterdir()
    folds = read_splits(cv / "splits_final.json")
    test = json.loads((cv / "fold_0" / "splits.json").read_text())["test_names"]
    pool = sorted(f"case{i}" for i in range(len(SIZES)) if f"case{i}" not in test)
    assert sorted(n for f in folds for n in f["val"]) == pool
    assert json.loads((cv / "fold_1" / "splits.json").read_text())["target_spacing"] == [2.0, 2.0]
