"""NDJSON framing against `bytes.split`: any chunking of any body gives the same numbered lines,
and an overlong line is one rejection, never buffered whole."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from streamscore.ingest.ndjson import NdjsonFramer

LIMIT = 16

lines_strategy = st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=30)


def frame(body: bytes, cuts: list[int]) -> tuple[list[tuple[int, bytes]], list[int]]:
    framer = NdjsonFramer(LIMIT)
    lines: list[tuple[int, bytes]] = []
    rejected: list[int] = []
    start = 0
    for cut in [*sorted(c % (len(body) + 1) for c in cuts), len(body)]:
        found, bad = framer.feed(body[start:cut])
        lines += found
        rejected += [r.index for r in bad]
        start = max(start, cut)
    found, bad = framer.close()
    return lines + found, rejected + [r.index for r in bad]


@given(lines_strategy, st.lists(st.integers(0, 10_000), max_size=8), st.booleans())
# Within the limit once stripped, over it as sent: was refused only when no newline ended it.
@example(raw=[b"\x00" * LIMIT + b"\t"], cuts=[], newline=False)
@example(raw=[b"\x00" * LIMIT + b"\t"], cuts=[], newline=True)
@example(raw=[b" " * (LIMIT + 1), b"{}"], cuts=[3], newline=False)
def test_any_chunking_frames_like_split(raw: list[bytes], cuts: list[int], newline: bool) -> None:
    body = b"\n".join(raw) + (b"\n" if newline else b"")
    lines, rejected = frame(body, cuts)
    # The limit is on a line as sent; a blank line within it is skipped, unnumbered.
    counted = [part for part in body.split(b"\n") if part.strip() or len(part) > LIMIT]
    numbered = list(enumerate(counted))
    assert lines == [(i, part.strip()) for i, part in numbered if len(part) <= LIMIT]
    assert rejected == [i for i, part in numbered if len(part) > LIMIT]


def test_an_endless_line_is_not_buffered() -> None:
    framer = NdjsonFramer(LIMIT)
    _, rejected = framer.feed(b"x" * 100)
    assert [r.index for r in rejected] == [0]
    for _ in range(1000):
        assert framer.feed(b"y" * 1000) == ([], [])
    assert framer._tail == b""
    assert framer.feed(b'\n{"a":1}\n') == ([(1, b'{"a":1}')], [])
