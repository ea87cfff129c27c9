"""Instant events: the fields of a JSON answer, reported while it streams.

:class:`InstantParser` is an incremental JSON tokenizer. Feed it the model's text chunk by chunk; it
returns :class:`InstantEvent` objects, each naming a field ``path`` (``items[2].title``), the new
text (``delta``), the value so far (``value``) and whether the field is final (``is_complete``).

The laws (checked by property tests over arbitrary chunkings, down to one character):

- every path is reported complete exactly once, children before their container, in document order;
- the sequence of completed paths and the final value do not depend on how the text was cut;
- the work done for a chunk is proportional to the chunk, never to the text received so far.

What is reported:

- a string value: one event per chunk that adds to it (``delta`` = the decoded new text), the last
  one with ``is_complete=True``;
- a number, ``true``, ``false`` or ``null``: one complete event once the token has ended;
- an object or array: an event when it opens (``value`` is the live container, filled as its
  children complete) and a complete event when it closes. The root's path is ``""``; a key that is not an identifier is quoted: ``["unit price"]``.

Text before the root (prose, a code fence) and after the root closes is ignored. A root that
turns out to be prose (``{name}``, ``[see below]``) is skipped: the root is reported only once it
is confirmed, by its first key and colon (an object) or its first value (an array), and a root that
fails before that makes the parser look again after it. ``root="object"`` (what an agent with an
object contract uses) never starts on a ``[``. A trailing comma before ``]`` or ``}`` is
tolerated, as models often write one. Any other text that is not JSON stops the events
(:attr:`InstantParser.failed`); the instant stream is for temporary UI, and the final answer is
parsed and validated separately (:mod:`keel.output`). ``NaN`` and ``Infinity`` are not JSON and
stop the events too.

Bounds (:class:`OutputLimits`): the answer's size, its nesting depth, the length of one number and
of one string are checked while the text streams, and a text past one raises
:class:`keel.OutputLimitExceeded`. Time is linear in the text for every shape (whitespace runs,
long strings, long numbers, deep nesting) and memory linear in the depth: a path is a chain of
frames, turned into its text only when an event's ``path`` is read.

Why a tokenizer of our own: ``jiter``'s partial mode (``jiter.from_json(buf, partial_mode=...)``) is
stateless, so every call re-parses the whole buffer (quadratic over a stream of small chunks); jiter
stays in use, through pydantic, for the final parse. ``ijson``'s push interface
(``basic_parse_coro``) is incremental but reports a string only once its closing quote arrives, so
it cannot give the partial string deltas a UI shows while a long field streams. No maintained
package gave both, so this module keeps a small state machine; strings, the bulk of an answer, are
scanned with ``re``/``str`` searches rather than character by character.
"""

from __future__ import annotations

import json
import re
from json.decoder import scanstring as _scanstring  # type: ignore[attr-defined]
from typing import Any, Literal

from keel.errors import OutputLimitExceeded
from keel.limits import DEFAULT_LIMITS, OutputLimits

# Size (issue 17): this file is a little over 600 lines and InstantParser._run over 80 on purpose.
# _run is the parser's hot loop, one iteration per token, kept in one frame with its locals: split
# into one method per state, each token pays at least one more Python call. Measured 2026-12-02
# (3.7 kB answer, CPU time, load 1.2): ~790 ns a token fed whole, ~950 ns a character fed one at a
# time; a bound method call is ~45 ns, so +5-6% per token for one extra call (more with the state
# passed back as a tuple). OutputLimits moved to keel.limits; the rest is the one state machine.

__all__ = ["InstantEvent", "InstantParser", "OutputLimits", "reset_event"]

_SPECIAL = re.compile(r'["\\]')
_WS_RUN = re.compile(r"[ \t\r\n]+")
_KEY_COLON = re.compile(r'"([^"\\]*)"[ \t\r\n]*:')
_SCALAR_RUN = re.compile(r"[0-9A-Za-z+\-.]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_ROOT_ANY = re.compile(r"[{\[]")
_ROOT_OBJECT = re.compile(r"{")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_LITERALS = {"true": True, "false": False, "null": None}
_UNCONFIRMED_MAX = 1024  # chars a root may run before it counts as confirmed anyway (bounds a rescan)

# parser states
_PRE, _VALUE, _ARR_FIRST, _KEY_OR_END, _KEY, _COLON, _AFTER, _STRING, _KEY_STRING, _SCALAR, _DONE, _FAILED = range(12)


class InstantEvent:
    """One instant event. ``kind`` is ``"field"`` or ``"reset"`` (see :func:`reset_event`).

    ``value`` of a partial string is joined on first access only, so a consumer that reads deltas
    never pays for the text so far; ``path`` is built on first access too.
    """

    __slots__ = ("_frame", "_parts", "_path", "_seg", "_value", "attempt", "delta", "is_complete", "kind")

    def __init__(
        self,
        path: str,
        delta: str,
        value: Any,
        is_complete: bool,
        attempt: int = 0,
        kind: Literal["field", "reset"] = "field",
        parts: list[str] | None = None,
    ):
        self.kind = kind
        self._path: str | None = path
        self._frame: _Frame | None = None
        self._seg: str | int = ""
        self.delta = delta
        self._value = value
        self._parts = parts
        self.is_complete = is_complete
        self.attempt = attempt

    @property
    def path(self) -> str:
        if self._path is None:
            self._path = _path_of(self._frame, self._seg)
            self._frame = None
        return self._path

    @property
    def value(self) -> Any:
        if self._parts is not None:
            self._value = "".join(self._parts[: self._value])
            self._parts = None
        return self._value

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "delta": self.delta,
            "value": self.value,
            "is_complete": self.is_complete,
            "attempt": self.attempt,
        }

    def __repr__(self) -> str:
        if self.kind == "reset":
            return f"InstantEvent(reset, attempt={self.attempt})"
        return f"InstantEvent({self.path!r}, delta={self.delta!r}, complete={self.is_complete}, attempt={self.attempt})"


def reset_event(attempt: int, reason: str = "") -> InstantEvent:
    """The event that abandons attempt ``attempt``: a UI drops every field it showed from it."""
    return InstantEvent("", reason, None, True, attempt, "reset")


def _field_event(frame: _Frame | None, seg: str | int, delta: str, value: Any, complete: bool, attempt: int,
                 parts: list[str] | None = None) -> InstantEvent:  # fmt: skip
    """An event whose path is built on first read (no tuple, no string: it runs once a value)."""
    event = _new_event(InstantEvent)
    event.kind = "field"
    event._path = "" if frame is None else None
    event._frame = frame
    event._seg = seg
    event.delta = delta
    event._value = value
    event._parts = parts
    event.is_complete = complete
    event.attempt = attempt
    return event


_new_event = InstantEvent.__new__


def _path_of(frame: _Frame | None, last: str | int) -> str:
    """The text of a path: the segments from the root down to ``frame``, then ``last``."""
    if frame is None:
        return ""
    segs: list[str | int] = [last]
    while frame.parent is not None:
        segs.append(frame.seg)
        frame = frame.parent
    out: list[str] = []
    for seg in reversed(segs):
        if isinstance(seg, int):
            out.append(f"[{seg}]")
        elif seg.isidentifier():
            out.append(f".{seg}" if out else seg)
        else:
            out.append(f"[{json.dumps(seg)}]")
    return "".join(out)


class _Frame:
    """An open object or array; ``parent`` and ``seg`` (its key or index there) make its path."""

    __slots__ = ("container", "index", "is_obj", "key", "parent", "seg")

    def __init__(self, container: Any, parent: _Frame | None, seg: str | int, is_obj: bool):
        self.container = container
        self.parent = parent
        self.seg = seg
        self.is_obj = is_obj
        self.key = ""
        self.index = 0


class InstantParser:
    """Turn JSON text, fed in chunks of any size, into :class:`InstantEvent` objects.

    :param attempt: the attempt number its events carry.
    :param limits: the :class:`OutputLimits` checked while feeding (default: the defaults).
    :param root: ``"object"`` to start only on ``{`` (an object contract), ``"any"`` for ``{`` or ``[``.

    >>> p = InstantParser()
    >>> [(e.path, e.delta, e.is_complete) for e in p.feed('{"title": "Hel')]
    [('', '', False), ('title', 'Hel', False)]
    >>> [(e.path, e.delta, e.is_complete) for e in p.feed('lo"}')]
    [('title', 'lo', True), ('', '', True)]
    """

    def __init__(
        self,
        attempt: int = 0,
        *,
        limits: OutputLimits | None = None,
        root: Literal["object", "any"] = "any",
    ):
        self.attempt = attempt
        self.limits = limits or DEFAULT_LIMITS
        self.root: Any = None
        self.failed = False
        self.chars = 0  # characters fed so far
        self.end = -1  # once the root has closed: the characters fed up to and including it
        self._root_re = _ROOT_OBJECT if root == "object" else _ROOT_ANY
        self._state = _PRE
        self._stack: list[_Frame] = []
        self._parts: list[str] = []  # the string being read
        self._str_len = 0
        self._escape = ""  # an escape sequence split across chunks
        self._scalar: list[str] = []
        self._scalar_len = 0
        self._vframe: _Frame | None = None  # where the value being read goes: its container
        self._vseg: str | int = ""  # and its key or index there
        self._last_delta = ""  # text of a string read in the chunk that closed it
        self._high = -1  # a \\uD800-\\uDBFF escape waiting for its low half
        self._confirmed = True  # no root open yet
        self._pending: list[str] = []  # the text of an unconfirmed root, from its bracket on
        self._pending_len = 0
        self._root_at = 0
        self._opened: InstantEvent | None = None  # the unconfirmed root's open event, held back

    @property
    def done(self) -> bool:
        """The root value has closed."""
        return self._state == _DONE

    # ---------------------------------------------------------------------------------- feeding

    def feed(self, chunk: str) -> list[InstantEvent]:
        """Read one chunk; return the events it completes. Raises :class:`keel.OutputLimitExceeded`."""
        out: list[InstantEvent] = []
        state = self._state
        if state in (_DONE, _FAILED):
            return out
        self.chars += len(chunk)
        if self.chars > self.limits.max_chars:
            self._state = _FAILED
            self.failed = True
            raise OutputLimitExceeded("max_chars", self.chars, self.limits.max_chars, "the answer's size")
        self._root_at = 0  # where this chunk's part of an unconfirmed root starts
        i, n = 0, len(chunk)
        while True:
            try:
                i, state = self._run(chunk, i, n, state, out)
            except OutputLimitExceeded:
                self._state = _FAILED
                self.failed = True
                raise
            if state == _FAILED and not self._confirmed:
                # the root was prose: look for the next one just after its bracket
                text = "".join(self._pending) + chunk[self._root_at :]
                self._reset()
                chunk, i, n, state = text, 1, len(text), _PRE
                continue
            break
        if not self._confirmed:
            piece = chunk[self._root_at :]
            self._pending.append(piece)
            self._pending_len += len(piece)
            if self._pending_len > _UNCONFIRMED_MAX:
                self._confirm(out)
        self._state = state
        if state == _DONE and self.end < 0:
            self.end = self.chars - (n - i)  # the text fed ends with the tail of this chunk
        if state == _FAILED:
            self.failed = True
        return out

    def _reset(self) -> None:
        self.root = None
        self._stack = []
        self._parts = []
        self._str_len = 0
        self._escape = ""
        self._scalar = []
        self._scalar_len = 0
        self._high = -1
        self._confirmed = True
        self._pending = []
        self._pending_len = 0
        self._opened = None

    def _run(self, chunk: str, i: int, n: int, state: int, out: list[InstantEvent]) -> tuple[int, int]:
        """The state machine over ``chunk[i:n]``; returns where it stopped and the state.

        Over 80 lines on purpose: the hot loop stays in one frame (see the note at the top)."""
        limits = self.limits
        while i < n:
            if state in (_STRING, _KEY_STRING):
                if not self._parts and not self._escape and self._high < 0:
                    # fast path: the whole string is in this chunk and has no escapes
                    j = chunk.find('"', i)
                    if j >= 0 and chunk.find("\\", i, j) < 0:
                        text = chunk[i:j]
                        if j - i > limits.max_string_chars:
                            raise OutputLimitExceeded("max_string_chars", j - i, limits.max_string_chars, "a string")
                        i = j + 1
                        if state == _STRING:
                            state = self._complete(self._vframe, self._vseg, text, text, out)
                        else:
                            self._stack[-1].key = text
                            state = _COLON
                        continue
                i, closed = self._read_string(chunk, i, out if state == _STRING else None)
                if closed:
                    text = "".join(self._parts)
                    self._parts = []
                    self._str_len = 0
                    if state == _STRING:
                        state = self._complete(self._vframe, self._vseg, text, self._last_delta, out)
                    else:
                        self._stack[-1].key = text
                        state = _COLON
                continue
            if state == _SCALAR:
                # read at most one character past the limit: a huge number is refused without reading it
                m = _SCALAR_RUN.match(chunk, i, min(n, i + limits.max_number_chars - self._scalar_len + 1))
                if m is not None:
                    piece = m.group()
                    self._scalar.append(piece)
                    self._scalar_len += len(piece)
                    if self._scalar_len > limits.max_number_chars:
                        raise OutputLimitExceeded(
                            "max_number_chars", self._scalar_len, limits.max_number_chars, "a number"
                        )
                    i = m.end()
                    if i >= n:
                        break
                state = self._end_scalar(out)
                if state == _FAILED:
                    break
                continue  # re-read the character after it in the new state
            if state == _PRE:
                m = self._root_re.search(chunk, i)
                if m is None:
                    i = n
                    break
                i = m.end()
                self._root_at = m.start()
                state = self._open(chunk[m.start()], None, "", out)
                continue
            c = chunk[i]
            if c in " \t\r\n":
                m = _WS_RUN.match(chunk, i)
                i = m.end() if m is not None else i + 1
                continue
            if state in (_KEY_OR_END, _KEY) and c == '"':
                m = _KEY_COLON.match(chunk, i)  # fast path: a whole key and its colon in this chunk
                if m is not None:
                    key = m.group(1)
                    if len(key) > limits.max_string_chars:
                        raise OutputLimitExceeded("max_string_chars", len(key), limits.max_string_chars, "a key")
                    self._stack[-1].key = key
                    i = m.end()
                    if not self._confirmed:
                        self._confirm(out)
                    state = _VALUE
                    continue
            i += 1
            if state in (_VALUE, _ARR_FIRST):
                top = self._stack[-1]
                if c == "]" and (state == _ARR_FIRST or not top.is_obj):
                    if not self._confirmed:
                        self._confirm(out)
                    state = self._close(out)  # an empty array, or a trailing comma models often write
                elif c == '"':
                    if not self._confirmed:
                        self._confirm(out)
                    self._vframe, self._vseg = top, (top.key if top.is_obj else top.index)
                    state = _STRING
                elif c == "{" or c == "[":
                    if not self._confirmed:
                        self._confirm(out)
                    state = self._open(c, top, top.key if top.is_obj else top.index, out)
                elif c in "-0123456789tfn":  # a root is confirmed only once this token has ended well
                    self._vframe, self._vseg = top, (top.key if top.is_obj else top.index)
                    self._scalar = [c]
                    self._scalar_len = 1
                    state = _SCALAR
                else:
                    state = _FAILED
            elif state == _AFTER:
                top = self._stack[-1]
                if c == ",":
                    state = _KEY if top.is_obj else _VALUE
                elif c == ("}" if top.is_obj else "]"):
                    state = self._close(out)
                else:
                    state = _FAILED
            elif state in (_KEY_OR_END, _KEY):
                if c == '"':
                    state = _KEY_STRING
                elif c == "}":  # an empty object, or a trailing comma
                    if not self._confirmed:
                        self._confirm(out)
                    state = self._close(out)
                else:
                    state = _FAILED
            elif state == _COLON:
                if c == ":":
                    if not self._confirmed:
                        self._confirm(out)
                    state = _VALUE
                else:
                    state = _FAILED
            if state in (_DONE, _FAILED):
                break
        return i, state

    def finish(self) -> list[InstantEvent]:
        """The end of the text: a root-level number still being read completes."""
        out: list[InstantEvent] = []
        if self._state == _SCALAR:
            self._state = self._end_scalar(out)
        if self._state not in (_DONE, _PRE):
            self.failed = True
        return out

    def partial_value(self) -> tuple[bool, Any]:
        """``(found, value)``: the root with every open container closed, for a truncated answer.

        A string being read is kept as read so far; a half-read number, literal or key is dropped.
        Used by :mod:`keel.output` to repair a truncated answer in one linear pass.
        """
        if self._state == _DONE:
            return True, self.root
        if self._state == _FAILED or not self._stack or not self._confirmed:
            return False, None
        top = self._stack[-1]
        seg: Any = top.key if top.is_obj else top.index
        value: Any = None
        has_value = False
        if self._state == _STRING:
            value, has_value = "".join(self._parts) + (chr(self._high) if self._high >= 0 else ""), True
        elif self._state == _SCALAR:
            token = "".join(self._scalar)
            if token in _LITERALS:
                value, has_value = _LITERALS[token], True
            elif _NUMBER.fullmatch(token):
                value, has_value = json.loads(token), True
        if has_value:
            _put(top, seg, value)
        for k in range(len(self._stack) - 1, 0, -1):
            child, parent = self._stack[k], self._stack[k - 1]
            _put(parent, child.seg, child.container)
        return True, self._stack[0].container

    # ---------------------------------------------------------------------------------- helpers

    def _confirm(self, out: list[InstantEvent]) -> None:
        self._confirmed = True
        self._pending = []
        self._pending_len = 0
        if self._opened is not None:
            out.append(self._opened)
            self._opened = None

    def _open(self, c: str, parent: _Frame | None, seg: str | int, out: list[InstantEvent]) -> int:
        if len(self._stack) >= self.limits.max_depth:
            raise OutputLimitExceeded("max_depth", len(self._stack) + 1, self.limits.max_depth, "the nesting depth")
        container: Any = {} if c == "{" else []
        event = _field_event(parent, seg, "", container, False, self.attempt)
        if self.root is None:
            self.root = container
            self._confirmed = False
            self._pending = []
            self._pending_len = 0
            self._opened = event
        else:
            out.append(event)
        self._stack.append(_Frame(container, parent, seg, c == "{"))
        return _KEY_OR_END if c == "{" else _ARR_FIRST

    def _close(self, out: list[InstantEvent]) -> int:
        frame = self._stack.pop()
        return self._complete(frame.parent, frame.seg, frame.container, "", out)

    def _complete(self, frame: _Frame | None, seg: str | int, value: Any, delta: str, out: list[InstantEvent]) -> int:
        """Put a finished value into its container and report it complete."""
        out.append(_field_event(frame, seg, delta, value, True, self.attempt))
        if not self._stack:
            return _DONE
        top = self._stack[-1]
        if top.is_obj:
            top.container[top.key] = value
        else:
            top.container.append(value)
            top.index += 1
        return _AFTER

    def _end_scalar(self, out: list[InstantEvent]) -> int:
        token = "".join(self._scalar)
        self._scalar = []
        self._scalar_len = 0
        if token in _LITERALS:
            value: Any = _LITERALS[token]
        elif token.isascii() and token.isdigit() and (token[0] != "0" or len(token) == 1):  # the common case
            value = int(token)
        elif _NUMBER.fullmatch(token):
            value = json.loads(token)  # at most max_number_chars, checked while it was read
        else:
            return _FAILED
        if not self._confirmed:
            self._confirm(out)
        return self._complete(self._vframe, self._vseg, value, token, out)

    def _read_string(self, chunk: str, i: int, out: list[InstantEvent] | None) -> tuple[int, bool]:
        """Read string content from ``chunk[i:]``; report the new text if ``out`` is given.

        Returns the next index and whether the closing quote was read. When it was, the text read
        in this chunk is left in ``_last_delta`` so the complete event carries it.
        """
        parts = self._parts
        start_len = len(parts)
        n = len(chunk)
        closed = False
        if not self._escape and self._high < 0 and chunk.find('"', i) >= 0:
            try:  # the rest of the string is in this chunk: decode its escapes at C speed
                text, end = _scanstring(chunk, i, False)
            except ValueError:
                pass  # not closed here after all, or an escape json does not know: the loop below
            else:
                parts.append(text)
                i, closed = end, True
        while i < n and not closed:
            if self._escape:
                i = self._read_escape(chunk, i)
                continue
            m = _SPECIAL.search(chunk, i)
            j = n if m is None else m.start()
            if self._high >= 0 and (j > i or chunk[j] == '"'):
                parts.append(chr(self._high))  # a lone high surrogate, kept as json.loads keeps it
                self._high = -1
            if m is None:
                parts.append(chunk[i:])
                i = n
                break
            if j > i:
                parts.append(chunk[i:j])
            if chunk[j] == '"':
                i = j + 1
                closed = True
                break
            self._escape = "\\"
            i = j + 1
        if len(parts) > start_len:
            added = "".join(parts[start_len:])
            self._str_len += len(added)
            if self._str_len > self.limits.max_string_chars:
                raise OutputLimitExceeded("max_string_chars", self._str_len, self.limits.max_string_chars, "a string")
        else:
            added = ""
        if out is not None:
            if closed:
                self._last_delta = added
            elif added:
                out.append(_field_event(self._vframe, self._vseg, added, len(parts), False, self.attempt, parts))
        return i, closed

    def _read_escape(self, chunk: str, i: int) -> int:
        esc = self._escape
        if len(esc) == 1:  # just the backslash
            c = chunk[i]
            if c != "u":
                if self._high >= 0:
                    self._parts.append(chr(self._high))
                    self._high = -1
                self._parts.append(_ESCAPES.get(c, c))
                self._escape = ""
                return i + 1
            esc += c
            i += 1
        need = 6 - len(esc)
        take = chunk[i : i + need]
        esc += take
        i += len(take)
        if len(esc) < 6:
            self._escape = esc
            return i
        code = int(esc[2:], 16) if all(h in "0123456789abcdefABCDEF" for h in esc[2:]) else 0xFFFD
        self._escape = ""
        high, self._high = self._high, -1
        if 0xDC00 <= code < 0xE000 and high >= 0:
            self._parts.append(chr(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)))
            return i
        if high >= 0:  # a lone high surrogate, as json.loads keeps it
            self._parts.append(chr(high))
        if 0xD800 <= code < 0xDC00:  # keep it back until its low half arrives
            self._high = code
        else:
            self._parts.append(chr(code))
        return i


def _put(frame: _Frame, seg: Any, value: Any) -> None:
    if frame.is_obj:
        frame.container[seg] = value
    else:
        frame.container.append(value)
