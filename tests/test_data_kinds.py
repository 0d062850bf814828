"""Data config kinds, patient-level splits, the binary collapse and the shared-data catalogue."""

from __future__ import annotations

import numpy as np
import pytest

from medbalance.config import parse_config
from medbalance.data import catalog
from medbalance.data.build import build_splits, collapse_foreground, split_groups
from medbalance.data.kinds import KINDS
from medbalance.errors import ConfigError, DataError


@pytest.mark.parametrize(
    ("section", "task"),
    [
        ({"kind": "camus", "path": "x"}, "segmentation"),
        ({"kind": "conic", "path": "x"}, "segmentation"),
        ({"kind": "monusac", "path": "x"}, "segmentation"),
        ({"kind": "breakhis", "path": "x", "magnification": "40X", "imbalance_ratio": 10}, "classification"),
        ({"kind": "chestxray", "path": "x"}, "classification"),
        ({"kind": "medmnist", "path": "x.npz"}, "classification"),
        ({"kind": "shared", "name": "pneumoniamnist"}, "classification"),
        ({"kind": "shared", "name": "drive"}, "segmentation"),
    ],
)
def test_every_kind_validates_and_names_its_task(section, task):
    assert parse_config({"data": section}).task == task


def test_kinds_is_the_one_list_of_data_kinds():
    import typing

    from medbalance import config

    # each key is its schema's `kind`; the config's union and "did you mean" list are built from it
    assert all(reader.schema.model_fields["kind"].default == kind for kind, reader in KINDS.items())
    assert config._DATA_KINDS == {kind: reader.schema for kind, reader in KINDS.items()}
    assert typing.get_args(config.DataConfig) == tuple(reader.schema for reader in KINDS.values())
    assert all(getattr(config, reader.schema.__name__) is reader.schema for reader in KINDS.values())
    assert len(KINDS) == 14


# the fixed tasks as config.py listed them before each reader declared its own
_CLASSIFICATION = {"longtail_phantom", "breakhis", "chestxray", "medmnist"}
_FIXED_SEGMENTATION = {"intraclass_phantom", "nuclei_phantom", "phantom3d", "nnunet", "camus", "conic", "monusac"}


@pytest.mark.parametrize("kind", sorted(_CLASSIFICATION | _FIXED_SEGMENTATION))
def test_every_fixed_kind_declares_its_task(kind):
    section = {"kind": kind} | ({"path": "x"} if "path" in KINDS[kind].schema.model_fields else {})
    cfg = parse_config({"data": section})
    assert cfg.task == ("classification" if kind in _CLASSIFICATION else "segmentation")


@pytest.mark.parametrize("kind", ["folder", "python"])
@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_folder_and_python_take_the_task_of_their_section(kind, task):
    section = {"kind": kind, "task": task} | ({"path": "x"} if kind == "folder" else {})
    assert parse_config({"data": section}).task == task


def test_python_kind_needs_its_data_again():
    with pytest.raises(ConfigError, match=r"given in Python \(data.kind: python\); pass the same data again"):
        build_splits(parse_config({"data": {"kind": "python"}}))


def test_kind_fields_are_checked():
    with pytest.raises(ConfigError, match="unknown key 'view' under 'data'.*did you mean 'views'"):
        parse_config({"data": {"kind": "camus", "path": "x", "view": ["2CH"]}})
    with pytest.raises(ConfigError, match="data.magnification"):
        parse_config({"data": {"kind": "breakhis", "path": "x", "magnification": "50X"}})
    with pytest.raises(ConfigError, match="data.imbalance_ratio"):
        parse_config({"data": {"kind": "medmnist", "path": "x", "imbalance_ratio": 0.5}})
    with pytest.raises(DataError, match="unknown shared dataset 'drve'"):
        parse_config({"data": {"kind": "shared", "name": "drve"}}).task


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_groups_keeps_every_patient_in_one_split(seed):
    rng = np.random.default_rng(seed)
    groups = [f"p{int(g)}" for g in rng.integers(0, 25, size=120)]
    parts = split_groups(groups, (0.1, 0.2), seed)
    assert sorted(np.concatenate(parts).tolist()) == list(range(120))
    owners = [{groups[i] for i in part} for part in parts]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    assert [p.tolist() for p in split_groups(groups, (0.1, 0.2), seed)] == [p.tolist() for p in parts]
    # Order of the files does not matter, only the set of patients.
    perm = rng.permutation(120)
    shuffled = split_groups([groups[i] for i in perm], (0.1, 0.2), seed)
    assert [{groups[perm[i]] for i in part} for part in shuffled] == owners


def test_binary_flag_collapses_foreground_classes():
    cfg = parse_config(
        {"data": {"kind": "nuclei_phantom", "size": 32, "n_train": 3, "n_val": 2, "n_test": 1, "binary": True}}
    )
    splits = build_splits(cfg)
    plain = build_splits(parse_config({"data": {**cfg.data.model_dump(), "binary": False}}))
    assert splits.train.num_classes == 2 and splits.train.class_names == ("background", "foreground")
    assert np.array_equal(splits.train.target, (plain.train.target > 0).astype(np.int64))
    assert splits.test is not None and splits.info["binary"]
    merged = collapse_foreground(plain.val)
    assert merged.names == plain.val.names and merged.target.max() == 1


def test_shared_catalogue(monkeypatch, tmp_path):
    assert set(catalog.SHARED_LOADERS) == set(catalog.SHARED_TASKS)
    monkeypatch.setenv("MEDBALANCE_DATA", str(tmp_path))
    assert catalog.shared_data_dir() == tmp_path
    with pytest.raises(DataError, match="shared dataset 'drive' not found under"):
        build_splits(parse_config({"data": {"kind": "shared", "name": "drive"}}))
