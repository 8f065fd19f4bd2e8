"""Token-by-token detokenisation for streaming answers."""

from __future__ import annotations

from typing import Callable, Sequence


class IncrementalDecoder:
    """Turns a growing list of token ids into new pieces of text.

    A piece is emitted only once it is stable: text ending in an incomplete UTF-8 sequence
    (decoded as U+FFFD) is held back until the next token completes it.

    Args:
        decode: ``ids -> text`` (the tokenizer's decode with special tokens skipped).
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._emitted = 0
        self.text = ""

    def push(self, token: int) -> str:
        """Add one token; return the text it completes (possibly empty)."""
        self.ids.append(token)
        self.text = self._decode(self.ids)
        if self.text.endswith("\ufffd"):
            return ""
        return self._take()

    def finish(self) -> str:
        """Whatever text is still held back."""
        return self._take()

    def _take(self) -> str:
        piece = self.text[self._emitted:]
        self._emitted = len(self.text)
        return piece
