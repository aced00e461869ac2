"""NDJSON framing: a streamed body, chunk by chunk, to numbered lines.

Lines are numbered among non-blank lines (the `index` every rejection reports). A line longer
than `max_line_bytes` is not buffered: its first bytes become a rejection and the rest is
skipped as it arrives, so one endless line cannot grow memory. The limit is on a line's bytes as
sent, blanks included (what has to be buffered), so that how a body is cut into chunks never
changes which lines are refused; such a line is refused even if it is all blanks.

>>> framer = NdjsonFramer(max_line_bytes=8)
>>> framer.feed(b'{"a":1}\\n\\n{"b"')
([(0, b'{"a":1}')], [])
>>> lines, rejected = framer.feed(b':2}\\nxxxxxxxxxxxx')
>>> lines, [(r.index, r.error) for r in rejected]
([(1, b'{"b":2}')], [(2, 'line longer than 8 bytes')])
>>> framer.feed(b'xx\\n{"c":3}'), framer.close()
(([], []), ([(3, b'{"c":3}')], []))
"""

from __future__ import annotations

from streamscore.events import Rejection

Lines = list[tuple[int, bytes]]  # (index, line without its newline or surrounding blanks)


class NdjsonFramer:
    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.lines = 0  # non-blank lines seen so far
        self._tail = b""
        self._skipping = False  # inside a line that is over the limit

    def feed(self, chunk: bytes) -> tuple[Lines, list[Rejection]]:
        """The complete lines that `chunk` ends, and rejections for overlong ones."""
        parts = (self._tail + chunk).split(b"\n")
        self._tail = parts.pop()
        lines: Lines = []
        rejected: list[Rejection] = []
        for part in parts:
            if self._skipping:
                self._skipping = False
                continue
            self._take(part, lines, rejected)
        if self._skipping:
            self._tail = b""
        elif len(self._tail) > self.max_line_bytes:
            rejected.append(self._overlong(self._tail))
            self._tail = b""
            self._skipping = True
        return lines, rejected

    def close(self) -> tuple[Lines, list[Rejection]]:
        """The last line, when the body does not end with a newline."""
        lines: Lines = []
        rejected: list[Rejection] = []
        if not self._skipping:
            self._take(self._tail, lines, rejected)
        self._tail = b""
        return lines, rejected

    def _take(self, part: bytes, lines: Lines, rejected: list[Rejection]) -> None:
        if len(part) > self.max_line_bytes:
            rejected.append(self._overlong(part))
        elif line := part.strip():
            lines.append((self.lines, line))
            self.lines += 1

    def _overlong(self, start: bytes) -> Rejection:
        index = self.lines
        self.lines += 1
        limit = self.max_line_bytes
        return Rejection(index, f"line longer than {limit} bytes", start[:1024], "line_too_long")
