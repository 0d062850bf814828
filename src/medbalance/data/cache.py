"""A decoded-and-resized dataset cache: decode a folder once, memory-map it at every later run.

Reading a folder dataset decodes and resizes every image at each run start; on a CPU that
often costs more than an epoch. :func:`cached_dataset` stores the resulting
:class:`~medbalance.data.datasets.ArrayDataset` as ``.npy`` files (images, target, extras)
plus a ``meta.json`` under one folder per cache key, and later runs open the arrays with
``np.load(mmap_mode="c")``: no decoding and no copy until a page is touched, and the pages
are shared by DataLoader workers and by concurrent runs on the same data.

The key is a SHA-256 of every file under the data root (relative path, size, modification
time in ns), of the preprocessing settings and of the medbalance version, so editing, adding or removing a file, or
changing ``size`` / ``channels``, selects a new entry. An entry is written to a temporary
folder and renamed into place (atomic on POSIX), so a killed run or a concurrent reader
never sees half an entry; an entry that fails to load (truncated, edited) is rebuilt.

Location: ``$MEDBALANCE_CACHE`` or else ``~/.cache/medbalance`` (entries under ``datasets/``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import medbalance
from medbalance.data.datasets import ArrayDataset

__all__ = [
    "CacheEntry",
    "cache_root",
    "dataset_key",
    "cached_dataset",
    "load_entry",
    "save_entry",
    "list_entries",
    "clear_cache",
]

log = logging.getLogger(__name__)

#: Bumped when the entry layout changes, so old entries are never misread.
FORMAT_VERSION = 2


def cache_root() -> Path:
    """``$MEDBALANCE_CACHE`` if set, else ``~/.cache/medbalance``."""
    env = os.environ.get("MEDBALANCE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medbalance"


def dataset_key(root: str | Path, settings: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the files under ``root`` (relative path, size, mtime), ``settings`` and
    the medbalance version.

    Args:
        root: a data folder (walked recursively; hidden files and folders skipped) or one file.
        settings: JSON-serialisable preprocessing settings (reader, size, channels, ...).

    Raises:
        ValueError: ``root`` does not exist.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.png").write_bytes(b"x")
        >>> dataset_key(d, {"size": 64}) == dataset_key(d, {"size": 128})
        False
    """
    root = Path(root)
    if not root.exists():
        raise ValueError(f"root '{root}' does not exist (expected a data folder or file)")
    digest = hashlib.sha256()
    # The package version too: a release that decodes differently must not reuse old entries.
    header = {"format": FORMAT_VERSION, "medbalance": medbalance.__version__, "settings": dict(settings)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    files = [root] if root.is_file() else _files(root)
    for path in files:
        st = path.stat()
        rel = path.name if path == root else path.relative_to(root).as_posix()
        digest.update(f"\0{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def _files(root: Path) -> list[Path]:
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(folder) / n for n in sorted(names) if not n.startswith(".")]
    return out


def save_entry(folder: str | Path, data: ArrayDataset, *, source: str = "") -> None:
    """Write ``data`` as the cache entry ``folder`` atomically (temporary folder, then rename).

    If another process wrote the same entry meanwhile, its entry is kept (same key, same data).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        arrays = {"images": data.images, "target": data.target, **{f"extra_{k}": v for k, v in data.extras.items()}}
        # A ragged list (native sizes) is stored as one flat array plus the shape of each part.
        shapes = {k: [list(a.shape) for a in v] for k, v in arrays.items() if isinstance(v, list)}
        arrays = {k: np.concatenate([a.ravel() for a in v]) if k in shapes else v for k, v in arrays.items()}
        for name, array in arrays.items():
            with open(tmp / f"{name}.npy", "wb") as fh:
                np.save(fh, array)
                fh.flush()
                os.fsync(fh.fileno())
        meta = {
            "format": FORMAT_VERSION,
            "num_classes": data.num_classes,
            "class_names": list(data.class_names),
            "names": list(data.names),
            "ignore_index": data.ignore_index,
            "spacing": data.spacing,
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
            "parts": shapes,
            "source": source,
        }
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        try:
            os.rename(tmp, folder)
        except OSError:  # the entry appeared meanwhile (a concurrent run): keep it
            if not (folder / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_entry(folder: str | Path) -> ArrayDataset:
    """Open the cache entry ``folder`` with its arrays memory-mapped copy-on-write.

    Copy-on-write (not read-only) because torch warns on tensors over read-only memory; a
    write lands in a private page of this process and never reaches the file.

    Raises:
        ValueError: the entry is missing a file, or an array's shape or dtype is not the one
            recorded in ``meta.json`` (a truncated or edited entry).
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="c") for name in meta["arrays"]}
    except (OSError, KeyError, json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"cache entry '{folder}' is unreadable ({exc})") from None
    if meta.get("format") != FORMAT_VERSION:
        found = meta.get("format")
        raise ValueError(f"cache entry '{folder}' has format {found} but this version reads {FORMAT_VERSION}")
    for name, spec in meta["arrays"].items():
        found = {"shape": list(arrays[name].shape), "dtype": str(arrays[name].dtype)}
        if found != spec:
            raise ValueError(f"cache entry '{folder}' array '{name}' is {found} but meta.json says {spec}")
    for name, shapes in meta.get("parts", {}).items():
        sizes = [int(np.prod(shape)) for shape in shapes]
        if sum(sizes) != arrays[name].size:
            raise ValueError(f"cache entry '{folder}' array '{name}' does not hold the parts meta.json lists")
        ends = np.cumsum(sizes)
        arrays[name] = [arrays[name][e - n : e].reshape(shape) for e, n, shape in zip(ends, sizes, shapes)]
    return ArrayDataset(
        arrays["images"],
        arrays["target"],
        num_classes=meta["num_classes"],
        class_names=meta["class_names"],
        names=meta["names"],
        extras={k.removeprefix("extra_"): v for k, v in arrays.items() if k.startswith("extra_")},
        ignore_index=meta.get("ignore_index"),
        spacing=meta.get("spacing"),
    )


def cached_dataset(
    root: str | Path,
    settings: Mapping[str, Any],
    build: Callable[[], ArrayDataset],
    *,
    enabled: bool = True,
    cache_dir: str | Path | None = None,
) -> ArrayDataset:
    """``build()``, or its cached result for the same files under ``root`` and ``settings``.

    Args:
        root: the data folder whose files ``build`` reads (they make the cache key).
        settings: everything else ``build``'s result depends on (reader name, size, channels).
        build: decodes the dataset; called on a miss, a corrupt entry, or with ``enabled=False``.
        enabled: ``False`` bypasses the cache entirely (config ``data.cache: false``).
        cache_dir: where entries live (default :func:`cache_root`).

    Returns:
        The dataset, memory-mapped from the cache when ``enabled``.

    Example:
        >>> from medbalance.data.folder import read_folder
        >>> ds = cached_dataset(path, {"reader": "folder", "size": 128},  # doctest: +SKIP
        ...                     lambda: read_folder(path, task="segmentation", size=128))
    """
    if not enabled:
        return build()
    key = dataset_key(root, settings)
    entry = Path(cache_dir if cache_dir is not None else cache_root()) / "datasets" / key
    if (entry / "meta.json").exists():
        try:
            data = load_entry(entry)
            log.debug("data cache hit: %s", entry)
            return data
        except ValueError as exc:
            log.warning("%s; rebuilding it", exc)
            shutil.rmtree(entry, ignore_errors=True)
    elif entry.exists():  # entries appear whole by rename, so one without meta.json is damaged
        log.warning("cache entry '%s' has no meta.json; rebuilding it", entry)
        shutil.rmtree(entry, ignore_errors=True)
    data = build()
    try:
        save_entry(entry, data, source=str(root))
    except OSError as exc:  # a full or read-only disk must not stop the run
        log.warning("could not write the data cache entry '%s' (%s); continuing without it", entry, exc)
        return data
    log.info("data cache written: %s (%s; 'medbalance cache list' shows every entry)", entry, _size_text(entry))
    return load_entry(entry)


@dataclass(frozen=True)
class CacheEntry:
    """One entry of the cache: its folder, size on disk, number of samples and source folder."""

    path: Path
    bytes: int
    samples: int
    source: str


def list_entries(root: str | Path | None = None) -> list[CacheEntry]:
    """The entries under ``root`` (default :func:`cache_root`), largest first."""
    folder = Path(root if root is not None else cache_root()) / "datasets"
    out = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        try:
            meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            meta = {}
        out.append(CacheEntry(entry, entry_bytes(entry), len(meta.get("names", [])), str(meta.get("source", "?"))))
    return sorted(out, key=lambda e: -e.bytes)


def clear_cache(root: str | Path | None = None) -> int:
    """Delete every entry under ``root`` (default :func:`cache_root`); returns how many."""
    entries = list_entries(root)
    for e in entries:
        shutil.rmtree(e.path, ignore_errors=True)
    return len(entries)


def entry_bytes(entry: Path) -> int:
    """Bytes on disk of one cache entry."""
    return sum(p.stat().st_size for p in entry.iterdir() if p.is_file())


def _size_text(entry: Path) -> str:
    size = entry_bytes(entry)
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
