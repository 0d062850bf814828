"""Where medbalance may write: inside the folder the user named, never over an existing file.

Every writer resolves its target (symbolic links followed, ``..`` collapsed) and refuses one
that lands outside the folder it was given, or that exists already.
"""

from __future__ import annotations

import os
from pathlib import Path

from medbalance.errors import RunDirError

__all__ = ["check_name", "resolve_inside", "claim_new", "check_out_folder", "check_links_inside"]


def check_name(name: str, *, key: str) -> str:
    """``name`` if it is usable as one path component (a run or file name), else a one-line error.

    Example:
        >>> check_name("unet-dice", key="name")
        'unet-dice'
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise RunDirError(f"invalid value for '{key}': '{name}'; expected a plain name without path parts")
    return name


def resolve_inside(folder: str | Path, target: str | Path, *, what: str = "output") -> Path:
    """``target`` resolved, after checking that it lies inside ``folder`` (also resolved).

    A dangling symbolic link is followed to where it points, so a link out of ``folder`` is
    refused before anything is created through it.

    Raises:
        RunDirError: ``target`` resolves outside ``folder``.
    """
    root = Path(folder).resolve()
    resolved = Path(target).resolve()
    if resolved != root and root not in resolved.parents:
        raise RunDirError(f"{what} '{target}' resolves to '{resolved}', outside '{folder}'; refused")
    return resolved


def claim_new(folder: str | Path, target: str | Path, *, force: bool = False, what: str = "output") -> Path:
    """Check that ``target`` may be written: inside ``folder``, and new unless ``force``.

    A dangling symbolic link counts as existing: writing through it would create a file
    elsewhere.

    Raises:
        RunDirError: outside ``folder``, or it exists and ``force`` is off.
    """
    resolved = resolve_inside(folder, target, what=what)
    if not force and (os.path.lexists(target) or resolved.exists()):
        raise RunDirError(f"{what} '{target}' already exists; nothing is overwritten (choose another path or --force)")
    return resolved


def check_out_folder(folder: str | Path, *, what: str = "--out") -> Path:
    """Check that ``folder`` is new or an empty folder, before any work; the writer creates it.

    Raises:
        RunDirError: ``folder`` is a file, a symbolic link, or a folder that is not empty.
    """
    folder = Path(folder)
    if folder.is_symlink():
        raise RunDirError(f"{what} '{folder}' is a symbolic link; name a real folder")
    if folder.exists() and not folder.is_dir():
        raise RunDirError(f"{what} '{folder}' is a file; expected a folder (or a path to create)")
    if folder.is_dir() and any(folder.iterdir()):
        raise RunDirError(
            f"{what} '{folder}' already exists and is not empty; choose a new or empty folder (nothing is overwritten)"
        )
    return folder


def check_links_inside(folder: str | Path) -> None:
    """Refuse a folder medbalance rewrites in place (a run) when a symbolic link in it points outside.

    Figures and masks are written by libraries that follow links; a planted link would carry
    the write out of the folder.

    Raises:
        RunDirError: naming the first such link.
    """
    folder = Path(folder)
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(parent, name)
            if path.is_symlink():
                resolve_inside(folder, path, what="symbolic link")
