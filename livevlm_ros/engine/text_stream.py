"""Token-by-token detokenisation for streaming answers."""

from __future__ import annotations

from typing import Callable, Sequence

#: What a decoder makes of bytes that form no complete UTF-8 character (yet).
REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Turns a growing list of token ids into new pieces of text.

    Each :meth:`push` returns the complete characters the new token formed. Only a trailing
    incomplete UTF-8 sequence (decoded as U+FFFD) is held back, until a later token completes
    it or :meth:`finish` gives it up; a U+FFFD followed by more text (bytes that will never be
    a character) is passed on like any other character. So a caller that sends one message per
    token keeps sending them while the text ends in an unfinished character.

    Args:
        decode: ``ids -> text`` (the tokenizer's decode with special tokens skipped).
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._emitted = 0
        self.text = ""

    def push(self, token: int) -> str:
        """Add one token; return the complete characters it formed (possibly empty)."""
        self.ids.append(token)
        self.text = self._decode(self.ids)
        return self._take(len(self.text.rstrip(REPLACEMENT)))

    def finish(self) -> str:
        """Whatever text is still held back."""
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        piece = self.text[self._emitted:end] if end > self._emitted else ""
        self._emitted = max(self._emitted, end)
        return piece
