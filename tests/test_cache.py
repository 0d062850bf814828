"""The decoded-dataset cache (medbalance.data.cache): hit / miss, keys, corrupt entries, atomicity."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medbalance.data.cache import cache_root, cached_dataset, dataset_key, load_entry, save_entry
from medbalance.data.datasets import ArrayDataset
from medbalance.data.folder import read_folder


def _write_folder(root: Path, n: int = 3, side: int = 20) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        Image.fromarray((rng.random((side, side)) > 0.7).astype(np.uint8)).save(root / "masks" / f"im{i}.png")
    return root


class _CountingReader:
    """``read_folder`` that counts its calls (a miss decodes, a hit does not)."""

    def __init__(self, root: Path, size: int = 16) -> None:
        self.root, self.size, self.calls = root, size, 0

    def __call__(self) -> ArrayDataset:
        self.calls += 1
        return read_folder(self.root, task="segmentation", size=self.size)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _write_folder(tmp_path / "data")


def _settings(size: int = 16) -> dict:
    return {"reader": "folder", "task": "segmentation", "channels": 1, "size": size}


def _same(a: ArrayDataset, b: ArrayDataset) -> None:
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.target, b.target)
    assert (a.num_classes, tuple(a.class_names), a.names) == (b.num_classes, tuple(b.class_names), b.names)


def test_miss_then_hit_returns_the_same_data_memory_mapped(folder: Path, tmp_path: Path) -> None:
    reader = _CountingReader(folder)
    first = cached_dataset(folder, _settings(), reader, cache_dir=tmp_path / "cache")
    second = cached_dataset(folder, _settings(), reader, cache_dir=tmp_path / "cache")
    assert reader.calls == 1
    _same(first, reader())
    _same(second, first)
    assert isinstance(second.images.base, np.memmap) or isinstance(second.images, np.memmap)
    sample = second[0]  # tensors from the copy-on-write map: writable, the file is untouched
    sample["image"].fill_(7.0)
    _same(load_entry(next((tmp_path / "cache" / "datasets").iterdir())), first)


def test_disabled_cache_always_builds_and_writes_nothing(folder: Path, tmp_path: Path) -> None:
    reader = _CountingReader(folder)
    for _ in range(2):
        cached_dataset(folder, _settings(), reader, enabled=False, cache_dir=tmp_path / "cache")
    assert reader.calls == 2
    assert not (tmp_path / "cache").exists()


def test_key_changes_with_settings_and_files(folder: Path) -> None:
    key = dataset_key(folder, _settings())
    assert dataset_key(folder, _settings()) == key
    assert dataset_key(folder, _settings(size=32)) != key
    image = folder / "images" / "im0.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched: same size, new mtime
    touched = dataset_key(folder, _settings())
    assert touched != key
    (folder / "masks" / "im0.png").write_bytes((folder / "masks" / "im0.png").read_bytes() + b"\0")  # size changes
    grown = dataset_key(folder, _settings())
    assert grown != touched
    (folder / "images" / "im2.png").rename(folder / "images" / "im9.png")  # renamed
    renamed = dataset_key(folder, _settings())
    assert renamed != grown
    (folder / ".DS_Store").write_bytes(b"x")  # hidden files do not count
    assert dataset_key(folder, _settings()) == renamed


def test_changed_file_is_a_miss(folder: Path, tmp_path: Path) -> None:
    reader = _CountingReader(folder)
    cached_dataset(folder, _settings(), reader, cache_dir=tmp_path / "cache")
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(folder / "images" / "im1.png")
    data = cached_dataset(folder, _settings(), reader, cache_dir=tmp_path / "cache")
    assert reader.calls == 2
    assert data.images[1].max() == 0.0
    assert len(list((tmp_path / "cache" / "datasets").iterdir())) == 2


@pytest.mark.parametrize("damage", ["truncate", "meta", "delete", "no meta"])
def test_corrupt_entry_is_rebuilt(folder: Path, tmp_path: Path, damage: str, caplog) -> None:
    reader = _CountingReader(folder)
    cached_dataset(folder, _settings(), reader, cache_dir=tmp_path / "cache")
    good = read_folder(folder, task="segmentation", size=16)  # in memory: the damage below cannot reach it
    entry = tmp_path / "cache" / "datasets" / dataset_key(folder, _settings())
    if damage == "truncate":
        data = (entry / "images.npy").read_bytes()
        (entry / "images.npy").write_bytes(data[: len(data) // 2])
    elif damage == "meta":
        (entry / "meta.json").write_text("{not json", encoding="utf-8")
    elif damage == "delete":
        (entry / "target.npy").unlink()
    else:
        (entry / "meta.json").unlink()
    with caplog.at_level("WARNING", logger="medbalance.data.cache"):
        rebuilt = cached_dataset(folder, _settings(), reader, cache_dir=tmp_path / "cache")
    assert reader.calls == 2
    assert "rebuilding" in caplog.text
    _same(rebuilt, good)
    _same(load_entry(entry), good)


def test_shape_mismatch_with_meta_is_reported(tmp_path: Path) -> None:
    data = ArrayDataset(np.zeros((2, 1, 4, 4), np.float32), np.zeros((2, 4, 4), np.int64), num_classes=2)
    save_entry(tmp_path / "e", data)
    np.save(tmp_path / "e" / "target.npy", np.zeros((3, 4, 4), np.int64))
    with pytest.raises(ValueError, match=r"array 'target' is .*\[3, 4, 4\].* but meta.json says"):
        load_entry(tmp_path / "e")


def test_save_is_atomic_and_keeps_an_entry_written_meanwhile(tmp_path: Path, monkeypatch) -> None:
    data = ArrayDataset(
        np.ones((2, 1, 4, 4), np.float32),
        np.ones((2, 4, 4), np.int64),
        num_classes=2,
        extras={"regions": np.full((2, 4, 4), 2, np.int64)},
    )
    entry = tmp_path / "e"

    def fail(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:  # a write killed half-way leaves no entry and no temp folder
        m.setattr(np, "save", fail)
        with pytest.raises(OSError):
            save_entry(entry, data)
    assert list(tmp_path.iterdir()) == []
    save_entry(entry, data)
    other = ArrayDataset(np.zeros((2, 1, 4, 4), np.float32), np.zeros((2, 4, 4), np.int64), num_classes=2)
    save_entry(entry, other)  # a concurrent writer lost the rename race: the first entry stays
    loaded = load_entry(entry)
    _same(loaded, data)
    np.testing.assert_array_equal(loaded.extras["regions"], data.extras["regions"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


def test_unwritable_cache_falls_back_to_the_built_data(folder: Path, tmp_path: Path, monkeypatch) -> None:
    import medbalance.data.cache as cache

    def fail(*args, **kwargs):
        raise OSError("read-only file system")

    monkeypatch.setattr(cache, "save_entry", fail)
    reader = _CountingReader(folder)
    data = cached_dataset(folder, _settings(), reader, cache_dir=tmp_path / "cache")
    _same(data, reader())


def test_cache_root_follows_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDBALANCE_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("MEDBALANCE_CACHE")
    assert cache_root() == Path.home() / ".cache" / "medbalance"


def test_missing_root_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="root '.*nope' does not exist"):
        dataset_key(tmp_path / "nope", {})


def test_a_folder_run_reads_its_data_through_the_cache(folder: Path, tmp_path: Path, monkeypatch) -> None:
    from medbalance.config import parse_config
    from medbalance.data.build import build_splits

    monkeypatch.setenv("MEDBALANCE_CACHE", str(tmp_path / "cache"))
    section = {"kind": "folder", "path": str(folder), "size": 16, "val_fraction": 0.34}
    first = build_splits(parse_config({"data": section}))
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1
    again = build_splits(parse_config({"data": section}))
    _same(first.train, again.train)
    assert list((tmp_path / "cache").iterdir()) == entries  # a hit, not a second entry
    monkeypatch.setenv("MEDBALANCE_CACHE", str(tmp_path / "other"))
    build_splits(parse_config({"data": {**section, "cache": False}}))
    assert not (tmp_path / "other").exists()
