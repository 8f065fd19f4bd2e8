"""The ideal the engine is measured against: one plain transformers forward over a ``DynamicCache``.

The *limit ratio* of a question is the engine's time to first token divided by the time of the
cheapest way any implementation could produce that token from the same retained memory: one
forward of the question's embeddings through the language model (``model.language_model``, its own
attention and masks) over a ``transformers.DynamicCache`` already holding as many tokens as the
answer attended to, then the LM head and the argmax read. The ratio is the engine's overhead (prompt
building, retrieval, rotation, cache assembly) over that ideal; the target is 1.2 or less.

The cache is filled with random keys and values: the cost of a forward does not depend on them.
"""

from __future__ import annotations

import time

import torch
from transformers import DynamicCache

from .instrument import synchronize


def plain_forward_seconds(model, question: str, retained_tokens: int, repeats: int = 5,
                          system_prompt=None) -> float:
    """Best-of-``repeats`` seconds of one plain forward of ``question`` over ``retained_tokens`` cached tokens.

    Args:
        model: a :class:`~livevlm_ros.engine.models.base.VideoLLM` (its language model is run as transformers runs it).
        retained_tokens: tokens in the cache (the engine's context: prefix + retrieved memory + short-term).
    """
    lm, device, dtype = model.language_model, model.device, model.dtype
    embeds = model.question_embeds(question, system_prompt).embeds[None]
    n = embeds.shape[1]
    generator = torch.Generator(device=device).manual_seed(0)
    cache = DynamicCache()
    shape = (1, model.num_kv_heads, retained_tokens, model.head_dim)
    with torch.inference_mode():
        for layer in range(model.num_layers):
            cache.update(torch.randn(shape, generator=generator, device=device, dtype=dtype),
                         torch.randn(shape, generator=generator, device=device, dtype=dtype), layer)
        positions = torch.arange(retained_tokens, retained_tokens + n, device=device)[None]
        best = float("inf")
        for _ in range(max(1, repeats) + 1):  # the first run warms up
            synchronize(device)
            started = time.perf_counter()
            out = lm(inputs_embeds=embeds, past_key_values=cache, position_ids=positions, use_cache=True)
            token = model.lm_head(out.last_hidden_state[:, -1]).argmax(dim=-1)
            int(token)  # the host read the engine's first token also pays
            elapsed = time.perf_counter() - started
            cache.crop(-n)  # forget the question again (transformers 5: a negative count removes)
            best = min(best, elapsed)
    return best
