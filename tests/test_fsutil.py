"""The texts people read about files: sizes in IEC units, counts with the right plural."""

from __future__ import annotations

import pytest

from vidtray.services.fsutil import gib, human_size, plural


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (84 * 1024**2, "84.0 MiB"),
    (int(0.8 * 1024**3), "819.2 MiB"), (5 * 1024**3, "5.0 GiB"), (3 * 1024**4, "3.0 TiB"),
    (2048 * 1024**4, "2048.0 TiB"),
])
def test_human_size_says_what_it_divides_by(n: int, text: str) -> None:
    assert human_size(n) == text


def test_thresholds_in_gib() -> None:
    assert gib(5.0) == "5 GiB" and gib(0.5) == "0.5 GiB"


@pytest.mark.parametrize(("count", "text"), [(0, "0 videos"), (1, "1 video"), (2, "2 videos")])
def test_plural(count: int, text: str) -> None:
    assert plural(count, "video") == text


def test_irregular_plural() -> None:
    assert plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == "3 entries"
