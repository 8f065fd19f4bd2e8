"""Fidelity study of the memory policies with real language-model weights (a TEXT PROXY of video).

``livevlm_bench --fidelity`` (see :mod:`.study`). Modules: :mod:`.streams` (captioned events),
:mod:`.arms` (memory x retrieval arms), :mod:`.probes` (engine reads: scores, retention, PaR
diagnosis), :mod:`.runner` (the loop), :mod:`.stats` (bootstrap), :mod:`.report` (tables, plots),
:mod:`.coverage` (the VSB coverage simulation), :mod:`.demo` (watch it answer).
"""
