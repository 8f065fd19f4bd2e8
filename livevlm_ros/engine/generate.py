"""The one layer loop of the engine, and prefill / decode on top of it (anchor: gpt-fast ``generate.py``).

Everything the language model computes goes through :func:`forward`: clip prefill into the stream's
memory, the question's prefill into an answer cache, and each decoded token. What differs is the
*cache* each layer writes to and attends over, one object with one method::

    cache.attend(layer_index, LayerInput, need_output) -> [n, heads * head_dim]

(:class:`~livevlm_ros.engine.prefill.MemoryPrefill` for clips,
:class:`~livevlm_ros.engine.answer_cache.AnswerCache` for answers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import torch

from .decoder import LayerInput, finish, logits_of, project


class LayerCache(Protocol):
    def attend(self, layer: int, inp: LayerInput, need_output: bool = True) -> torch.Tensor: ...


def forward(model, hidden: torch.Tensor, cache: LayerCache, *, need_output: bool = True) -> Optional[torch.Tensor]:
    """Run every decoder layer of ``model`` over ``hidden`` ``[n, hidden_size]`` with ``cache``.

    With ``need_output=False`` (clip prefill) the last layer only writes its keys and values.
    Returns the last layer's hidden states ``[n, hidden_size]``, or None.
    """
    last = model.num_layers - 1
    for i, layer in enumerate(model.layers):
        inp = project(layer, hidden)
        needed = need_output or i < last
        attention = cache.attend(i, inp, needed)
        if not needed:
            return None
        hidden = finish(layer, inp.residual, attention)
    return hidden


def prefill(model, embeds: torch.Tensor, cache: LayerCache) -> torch.Tensor:
    """Prefill ``embeds`` ``[n, hidden]``; returns the next token's logits ``[vocab]`` (float32)."""
    return logits_of(model.final_norm, model.lm_head, forward(model, embeds, cache))


def token_logprobs(model, embeds: torch.Tensor, cache: LayerCache) -> torch.Tensor:
    """Log-softmax ``[n, vocab]`` (float32) of the token after each of ``embeds``' ``n`` positions."""
    hidden = forward(model, embeds, cache)
    return model.lm_head(model.final_norm(hidden)).float().log_softmax(dim=-1)


def decode_one_token(model, token: torch.Tensor, cache) -> torch.Tensor:
    """One decode step: ``token`` (``[1]`` int64 on the device) in, next-token logits ``[vocab]`` out.

    Static shapes over preallocated buffers and no host read: capturable in a CUDA graph.
    """
    logits = prefill(model, model.embed_tokens(token), cache)
    cache.advance(1)
    return logits


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked: greedy when ``temperature`` is None, else temperature + top-p.

    Attributes:
        temperature: > 0 softens (> 1) or sharpens (< 1) the distribution; None: greedy argmax.
        top_p: nucleus: sample among the most likely tokens whose probabilities sum to ``top_p``.
        seed: seed of the sampling generator (None: a fresh one).
    """

    temperature: Optional[float] = None
    top_p: float = 1.0
    seed: Optional[int] = None

    def generator(self, device: torch.device) -> Optional[torch.Generator]:
        if self.temperature is None:
            return None
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed if self.seed is not None else torch.seed())
        return generator

    def pick(self, logits: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """The next token ``[1]`` int64 (on the logits' device) from ``logits`` ``[vocab]``."""
        if self.temperature is None:
            return logits.argmax().reshape(1)
        probs = (logits / self.temperature).softmax(dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs > self.top_p  # keep the first that crosses top_p
            probs = probs.scatter(0, order, sorted_probs.masked_fill(outside, 0.0))
        return torch.multinomial(probs, 1, generator=generator)


@dataclass
class Decoded:
    """Result of :func:`decode_n_tokens`. ``first_token_s``: perf_counter time the first token was read."""

    ids: list
    stop_reason: str
    first_token_s: Optional[float]


def decode_n_tokens(model, cache, logits: torch.Tensor, max_new: int, sampling: Sampling, *,
                    stop_ids: frozenset, on_token: Optional[Callable[[int, bool], None]] = None,
                    should_stop: Optional[Callable[[], bool]] = None,
                    check_first: Optional[Callable[[list], None]] = None,
                    extra_first: Optional[torch.Tensor] = None) -> Decoded:
    """Decode up to ``max_new`` tokens after the prefill's ``logits``; one host read per token.

    Args:
        stop_ids: tokens that end the answer (not emitted).
        on_token: called with each emitted token id, and whether it is the last the length allows.
        should_stop: polled before each token; True ends the answer (``"cancelled"``).
        check_first / extra_first: ``extra_first`` (a ``[m]`` int64 device tensor) is read together with the
            first token, in the same host read, and ``check_first(values)`` may raise on it (e.g. an empty
            time window) before anything is emitted.
    """
    generator = sampling.generator(logits.device)
    token = sampling.pick(logits, generator)
    ids: list = []
    first_s = None
    stop_reason = "length"
    for step in range(max_new):
        if should_stop is not None and should_stop():
            stop_reason = "cancelled"
            break
        if first_s is None:
            values = (token if extra_first is None else torch.cat([token, extra_first.to(token.dtype)])).tolist()
            first_s = time.perf_counter()
            if check_first is not None:
                check_first(values[1:])
            value = values[0]
        else:
            value = int(token)
        if value in stop_ids:
            stop_reason = "eos"
            break
        ids.append(value)
        if on_token is not None:
            on_token(value, step + 1 == max_new)
        if step + 1 < max_new:
            token = sampling.pick(decode_one_token(model, token, cache), generator)
    return Decoded(ids, stop_reason, first_s)
