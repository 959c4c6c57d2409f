"""`RequestCut`: the stream-start parser's way past the request every element repeats.

The server writes the start request into every element, byte for byte the same. Parsing
it again was two thirds of ijson's work per element (and comparing the result with the
request before, another 7k instructions). Once a request is known, each verbatim repeat
`"request":{...}` in a read is cut to `"request":N` before ijson sees the read: N is a
random 19-digit integer that no float equals and that the body has not held, and the
builder (`TaskBuilder`) takes N for the `StartRequest` already made. Pure: bytes in,
bytes out.

Exact: a repeat is cut only right after `,` or `{` where the read's nesting (the reader's
guard, replayed up to there) is an element's own level outside any string. In a valid body
that is the element's `request` key and the cut bytes one whole value, so ijson builds the
same element with N in the request's place; before an invalid byte it stops at the same
place with the same message, and the error's excerpt is taken from the bytes received.
"""

from __future__ import annotations

import json
import secrets
from bisect import bisect_left

from ._nesting import NestingGuard

__all__ = ["RequestCut"]

_KEY = b'"request":'
_BEFORE_KEY = (b",", b"{")
# The nesting inside an element of the top-level array: its own keys.
_ELEMENT_LEVEL = 2
# A stream whose request keeps changing is not the server's usual one: stop cutting.
_MAX_REQUESTS = 8


class RequestCut:
    """Cuts the repeats of one stream's request out of its reads (`cut`), and knows each
    stand-in it handed out (`uncut`)."""

    def __init__(self) -> None:
        self._key = b""  # `"request":` and the request's bytes; b"": nothing to cut
        self._head = b""
        self._stand_in = b""
        self._digits = b""  # N as the body would write it
        self._texts: dict[int, bytes] = {}  # every N handed out: the request it stands for
        self._edge = b""  # the previous read's last bytes (N, or the byte before a key)
        self._shorter = 0  # how much shorter a stand-in is than the repeat it replaced
        # Stand-ins put into the reads, and of those given back: a stand-in the body wrote
        # itself (the cut stops at that read) finds none left and is no request.
        self._made = self._taken = 0
        #: True once a read held an N: nothing is cut from then on.
        self.off = False

    def expect(self, request: object) -> int | None:
        """Cut repeats of `request` (as decoded) from the next read on: its stand-in N, or
        None when it cannot be cut (then nothing is)."""
        text = _compact(request)
        self._key = b""
        if self.off or not text or b"\\" in text or len(self._texts) >= _MAX_REQUESTS:
            return None  # a backslash: its bytes could be written other ways, and escape
        # Odd and past 2**62: more significant bits than a float holds, so no float equals
        # it; below 2**63, as yajl refuses a bigger integer ("integer overflow").
        value = secrets.randbits(62) | (1 << 62) | 1
        self._digits = str(value).encode()
        self._key = _KEY + text
        self._head = self._key[: len(_KEY) + 8]
        self._stand_in = _KEY + self._digits
        self._texts[value] = text
        return value

    def take(self, value: object) -> bool:
        """Whether `value` is a stand-in the reads held one more of (then it is given back:
        one element each)."""
        if type(value) is int and value in self._texts and self._taken < self._made:
            self._taken += 1
            return True
        return False

    def uncut(self, value: object) -> object | None:
        """The request a stand-in N stands for, decoded afresh, given back as `take` does
        (None: `value` is none, or none is left)."""
        text = self._texts.get(value) if type(value) is int else None
        return None if text is None or not self.take(value) else json.loads(text)

    def cut(self, data: bytes, nesting: NestingGuard) -> tuple[bytes, list[int]]:
        """`data` with its repeats cut, and where each stand-in starts in the cut bytes.
        `nesting` is the reader's guard, already fed `data`."""
        edge, self._edge = self._edge, data[-len(self._digits) - 1 :]
        key = self._key
        if not key:
            return data, []
        digits = self._digits
        if digits in data or digits in edge + data[: len(digits)]:
            self.off, self._key = True, b""  # the body holds N itself: N means nothing now
            return data, []
        at = data.find(self._head)
        if at < 0:
            return data, []
        probe = nesting.replay()
        stand_in = self._stand_in
        shorter = self._shorter = len(key) - len(stand_in)
        parts: list[bytes] = []
        cuts: list[int] = []
        start = fed = 0
        while at >= 0:
            if data.startswith(key, at) and (data[at - 1 : at] if at else edge[-1:]) in _BEFORE_KEY:
                probe.feed(data[fed:at])
                fed = at
                if probe.depth == _ELEMENT_LEVEL and not probe.in_string:
                    # A key and a whole value from a clean state: the nesting after is as before.
                    parts += data[start:at], stand_in
                    cuts.append(at - shorter * len(cuts))
                    start = fed = at + len(key)
                    at = data.find(self._head, start)
                    continue
            at = data.find(self._head, at + 1)
        if not cuts:
            return data, []
        self._made += len(cuts)
        parts.append(data[start:])
        return b"".join(parts), cuts

    def origin(self, at: int, cuts: list[int]) -> int:
        """Where byte `at` of a cut read stood in the read received."""
        return at + self._shorter * bisect_left(cuts, at)


def _compact(value: object) -> bytes:
    """`value` as the server writes JSON (compact, UTF-8), to recognise its repeats by;
    b"" when it has no such form."""
    if not isinstance(value, dict):
        return b""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode()
    except (TypeError, ValueError):  # a lone surrogate's UnicodeEncodeError is a ValueError
        return b""
