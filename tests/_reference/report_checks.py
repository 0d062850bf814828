"""Checks shared by the report tests: the HTML parses and every figure is a real PNG."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

_VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Collector(HTMLParser):
    """Collects image sources and headings; fails on a closing tag that closes nothing open."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.headings: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in _VOID:
            self.stack.append(tag)
        self._in_heading = tag in ("h1", "h2")

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        self._in_heading = False

    def handle_data(self, data):
        if self._in_heading:
            self.headings.append(data)


def assert_real_png(data: bytes, *, min_side: int = 80) -> np.ndarray:
    """A decodable PNG of at least ``min_side`` pixels a side with more than a few colours."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        arr = np.asarray(img.convert("RGB"))
    assert min(arr.shape[:2]) >= min_side, arr.shape
    packed = (arr[..., 0].astype(np.int32) << 16) | (arr[..., 1].astype(np.int32) << 8) | arr[..., 2]
    assert len(np.unique(packed)) > 8, "an (almost) blank figure"
    return arr


def check_html(path: Path) -> list[str]:
    """Parse ``path``; assert every tag closes and every image is an embedded real PNG. Returns the headings."""
    parser = _Collector()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.stack == [], f"unclosed tags {parser.stack}"
    assert parser.images, "no figure"
    for src in parser.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        assert_real_png(base64.b64decode(src.split(",", 1)[1]))
    return parser.headings


def check_markdown(path: Path) -> list[Path]:
    """Every image a ``report.md`` links exists beside it and is a real PNG. Returns the images."""
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", path.read_text(encoding="utf-8"))
    assert links, "no figure"
    files = [path.parent / link for link in links]
    for file in files:
        assert file.is_file(), file
        assert_real_png(file.read_bytes())
    return files
