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

Text before the first ``{`` or ``[`` (prose, a code fence) and after the root closes is ignored.
A trailing comma before ``]`` or ``}`` is tolerated, as models often write one. Any other text
that is not JSON stops the events (:attr:`InstantParser.failed`); the instant stream is for
temporary UI, and the final answer is parsed and validated separately (:mod:`keel.output`).

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
from typing import Any, Literal

__all__ = ["InstantEvent", "InstantParser", "reset_event"]

_SPECIAL = re.compile(r'["\\]')
_COMMA = re.compile(r"[ \t\r\n]*,[ \t\r\n]*")
_KEY_COLON = re.compile(r'[ \t\r\n]*"([^"\\]*)"[ \t\r\n]*:[ \t\r\n]*')
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_WS = frozenset(" \t\r\n")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_LITERALS = {"true": True, "false": False, "null": None}

# parser states
_PRE, _VALUE, _ARR_FIRST, _KEY_OR_END, _KEY, _COLON, _AFTER, _STRING, _KEY_STRING, _SCALAR, _DONE, _FAILED = range(12)


class InstantEvent:
    """One instant event. ``kind`` is ``"field"`` or ``"reset"`` (see :func:`reset_event`).

    ``value`` of a partial string is joined on first access only, so a consumer that reads deltas
    never pays for the text so far.
    """

    __slots__ = ("_parts", "_value", "attempt", "delta", "is_complete", "kind", "path")

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
        self.path = path
        self.delta = delta
        self._value = value
        self._parts = parts
        self.is_complete = is_complete
        self.attempt = attempt

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


def _child(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


class _Frame:
    __slots__ = ("container", "index", "is_obj", "key", "path")

    def __init__(self, container: Any, path: str, is_obj: bool):
        self.container = container
        self.path = path
        self.is_obj = is_obj
        self.key = ""
        self.index = 0


class InstantParser:
    """Turn JSON text, fed in chunks of any size, into :class:`InstantEvent` objects.

    >>> p = InstantParser()
    >>> [(e.path, e.delta, e.is_complete) for e in p.feed('{"title": "Hel')]
    [('', '', False), ('title', 'Hel', False)]
    >>> [(e.path, e.delta, e.is_complete) for e in p.feed('lo"}')]
    [('title', 'lo', True), ('', '', True)]
    """

    def __init__(self, attempt: int = 0):
        self.attempt = attempt
        self.root: Any = None
        self.failed = False
        self._state = _PRE
        self._stack: list[_Frame] = []
        self._parts: list[str] = []  # the string being read
        self._escape = ""  # an escape sequence split across chunks
        self._scalar = ""
        self._path = ""  # path of the value being read
        self._last_delta = ""  # text of a string read in the chunk that closed it
        self._high = -1  # a \\uD800-\\uDBFF escape waiting for its low half

    @property
    def done(self) -> bool:
        """The root value has closed."""
        return self._state == _DONE

    # ---------------------------------------------------------------------------------- feeding

    def feed(self, chunk: str) -> list[InstantEvent]:
        out: list[InstantEvent] = []
        state = self._state
        if state in (_DONE, _FAILED):
            return out
        i, n = 0, len(chunk)
        while i < n:
            if state in (_STRING, _KEY_STRING):
                if not self._parts and not self._escape and self._high < 0:
                    # fast path: the whole string is in this chunk and has no escapes
                    j = chunk.find('"', i)
                    if j >= 0 and chunk.find("\\", i, j) < 0:
                        text = chunk[i:j]
                        i = j + 1
                        if state == _STRING:
                            state = self._complete(self._path, text, text, out)
                        else:
                            self._stack[-1].key = text
                            state = _COLON
                        continue
                i, closed = self._read_string(chunk, i, out if state == _STRING else None)
                if closed:
                    text = "".join(self._parts)
                    self._parts = []
                    if state == _STRING:
                        state = self._complete(self._path, text, self._last_delta, out)
                    else:
                        self._stack[-1].key = text
                        state = _COLON
                continue
            if state == _AFTER:
                m = _COMMA.match(chunk, i)
                if m is not None:
                    i = m.end()
                    state = _KEY if self._stack[-1].is_obj else _VALUE
                    if state == _VALUE:
                        continue
            if state in (_KEY_OR_END, _KEY):
                m = _KEY_COLON.match(chunk, i)  # fast path: a whole key and its colon in this chunk
                if m is not None:
                    self._stack[-1].key = m.group(1)
                    i = m.end()
                    state = _VALUE
                    continue
                if i >= n:
                    break
            c = chunk[i]
            if state == _SCALAR:
                if c in _NUMBER_CHARS or c.isalpha():
                    self._scalar += c
                    i += 1
                    continue
                state = self._end_scalar(out)
                if state == _FAILED:
                    break
                continue  # re-read c in the new state
            i += 1
            if c in _WS:
                continue
            if state == _PRE:
                if c == "{" or c == "[":
                    state = self._open(c, "", out)
                continue
            if state in (_VALUE, _ARR_FIRST):
                if c == "]" and (state == _ARR_FIRST or not self._stack[-1].is_obj):
                    state = self._close(out)  # an empty array, or a trailing comma models often write
                elif c == '"':
                    self._path = self._value_path()
                    state = _STRING
                elif c == "{" or c == "[":
                    state = self._open(c, self._value_path(), out)
                elif c in _NUMBER_CHARS or c.isalpha():
                    self._path = self._value_path()
                    self._scalar = c
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
                    state = self._close(out)
                else:
                    state = _FAILED
            elif state == _COLON:
                state = _VALUE if c == ":" else _FAILED
            if state in (_DONE, _FAILED):
                break
        self._state = state
        if state == _FAILED:
            self.failed = True
        return out

    def finish(self) -> list[InstantEvent]:
        """The end of the text: a root-level number still being read completes."""
        out: list[InstantEvent] = []
        if self._state == _SCALAR:
            self._state = self._end_scalar(out)
        if self._state not in (_DONE, _PRE):
            self.failed = True
        return out

    # ---------------------------------------------------------------------------------- helpers

    def _value_path(self) -> str:
        top = self._stack[-1]
        if top.is_obj:
            return _child(top.path, top.key)
        return f"{top.path}[{top.index}]"

    def _open(self, c: str, path: str, out: list[InstantEvent]) -> int:
        container: Any = {} if c == "{" else []
        if self.root is None:
            self.root = container
        self._stack.append(_Frame(container, path, c == "{"))
        out.append(InstantEvent(path, "", container, False, self.attempt))
        return _KEY_OR_END if c == "{" else _ARR_FIRST

    def _close(self, out: list[InstantEvent]) -> int:
        frame = self._stack.pop()
        return self._complete(frame.path, frame.container, "", out)

    def _complete(self, path: str, value: Any, delta: str, out: list[InstantEvent]) -> int:
        """Put a finished value into its container and report it complete."""
        out.append(InstantEvent(path, delta, value, True, self.attempt))
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
        token = self._scalar
        self._scalar = ""
        if token in _LITERALS:
            value: Any = _LITERALS[token]
        else:
            try:
                value = json.loads(token)
            except ValueError:
                return _FAILED
            if not isinstance(value, (int, float)):
                return _FAILED
        return self._complete(self._path, value, token, out)

    def _read_string(self, chunk: str, i: int, out: list[InstantEvent] | None) -> tuple[int, bool]:
        """Read string content from ``chunk[i:]``; report the new text if ``out`` is given.

        Returns the next index and whether the closing quote was read. When it was, the text read
        in this chunk is left in ``_last_delta`` so the complete event carries it.
        """
        parts = self._parts
        start_len = len(parts)
        n = len(chunk)
        closed = False
        while i < n:
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
        if out is not None:
            delta = "".join(parts[start_len:]) if len(parts) > start_len else ""
            if closed:
                self._last_delta = delta
            elif delta:
                out.append(InstantEvent(self._path, delta, len(parts), False, self.attempt, parts=parts))
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
