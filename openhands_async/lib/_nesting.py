"""`NestingGuard`: the stream-start parser's check on a body's nesting depth, at C speed.

Pure: bytes in, a depth out. The parser feeds each read through it before ijson sees the
read (see `NestingGuard` for why ijson must never see a deeply nested body).
"""

from __future__ import annotations

import re

__all__ = ["MAX_DEPTH", "NestingGuard"]

# Far deeper than a start task nests; a body past it is hostile or broken.
MAX_DEPTH = 64
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
# Keep quotes and brackets only, `{}` spelled `[]`: what nesting depth depends on.
_SHAPE = bytes.maketrans(b"{}", b"[]")
_NOT_SHAPE = bytes(set(range(256)) - set(b'"[]{}'))


class NestingGuard:
    """Tracks a JSON body's nesting depth across chunks, at C speed (a few bytes methods
    a chunk, no per-event Python), and raises once it passes MAX_DEPTH.

    ijson keeps a prefix string per open level, so memory grows with the square of the
    depth: 100 000 nested `[` in a 200 KB body took tens of GB. Checking the bytes before
    ijson sees them keeps its fast C `items` path for every element.
    """

    def __init__(self) -> None:
        self.depth = 0
        self._in_string = False
        self._escaped = False  # the chunk before ended inside a string, on a backslash
        self._before: tuple[int, bool, bool] = (0, False, False)  # the state before a feed

    @property
    def in_string(self) -> bool:
        """Whether the bytes fed so far end inside a JSON string (an escape pending too)."""
        return self._in_string or self._escaped

    def replay(self) -> NestingGuard:
        """A fresh guard in the state before the last `feed`: fed parts of that chunk in
        turn, it tells the nesting at any point of it."""
        probe = NestingGuard()
        probe.depth, probe._in_string, probe._escaped = self._before
        return probe

    def feed(self, data: bytes) -> bool:
        """Account for the next chunk; False once the body nests deeper than MAX_DEPTH."""
        self._before = (self.depth, self._in_string, self._escaped)
        if self._escaped and data:  # an empty chunk leaves the escape to the next one
            data, self._escaped = data[1:], False
        # Escapes go first so an escaped quote cannot end a string; a lone backslash left
        # at the very end escapes the next chunk's first byte.
        if b"\\" in data:
            data = _ESCAPE.sub(b"", data)
            if data.endswith(b"\\"):
                data, self._escaped = data[:-1], True
        shape = data.translate(_SHAPE, _NOT_SHAPE)
        if self._in_string:
            close = shape.find(b'"')
            if close < 0:
                return True
            shape, self._in_string = shape[close + 1 :], False
        # The usual read: up to its last bracket, every run of quotes is even (`count`
        # takes them two by two), so no bracket is inside a string; the quotes after it
        # only say whether a string is left open. Then the brackets alone are the shape:
        # a few C passes over the shape, no regex.
        end = max(shape.rfind(b"["), shape.rfind(b"]")) + 1
        brackets = shape.translate(None, b'"')
        if 2 * shape.count(b'""', 0, end) == end - len(brackets):
            self._in_string = (len(shape) - end) % 2 == 1
            shape = brackets
        else:
            # Dropping two adjacent quotes leaves every other byte as much inside or outside
            # a string as before, and clears most strings (no brackets in them).
            shape = _STRING.sub(b"", shape.replace(b'""', b""))
            quote = shape.find(b'"')
            if quote >= 0:  # a string still open at the chunk's end
                shape, self._in_string = shape[:quote], True
        opens = shape.count(b"[")
        if self.depth + opens <= MAX_DEPTH:
            self.depth += 2 * opens - len(shape)
            return True
        # A big read holds far more than MAX_DEPTH opens. Drop matched `[]` pairs level by
        # level (C speed, a few passes): `levels` passes leave `]`*a + `[`*b, and no point
        # of the read nests deeper than depth + levels + b. Only past that, byte by byte.
        reduced, levels = shape, 0
        while b"[]" in reduced and self.depth + levels <= MAX_DEPTH:
            reduced, levels = reduced.replace(b"[]", b""), levels + 1
        unmatched_opens = reduced.count(b"[")
        if self.depth + levels + unmatched_opens <= MAX_DEPTH:
            self.depth += 2 * unmatched_opens - len(reduced)
            return True
        for byte in shape:
            self.depth += 1 if byte == 0x5B else -1
            if self.depth > MAX_DEPTH:
                return False
        return True

    def safe_length(self, data: bytes) -> int:
        """After `feed(data)` failed: how many leading bytes of `data` stay within the cap.
        Hostile input only, so a bisection over fresh guards in the state before the feed
        (a longer prefix can only nest as deep or deeper)."""
        low, high = 0, len(data)  # the prefix of `low` bytes passes, of `high` fails
        while high - low > 1:
            mid = (low + high) // 2
            if self.replay().feed(data[:mid]):
                low = mid
            else:
                high = mid
        return low
