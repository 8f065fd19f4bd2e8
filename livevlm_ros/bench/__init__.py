"""Benchmarks of the LiveVLM engine: policies side by side (``livevlm_bench``) and a text proxy of fidelity.

Modules: :mod:`.cli` (console script), :mod:`.sweep` (latency/memory sweep), :mod:`.frames`
(benchmark frames), :mod:`.policies`, :mod:`.instrument` (timers, peak memory),
:mod:`.layouts` (full-size model layouts), :mod:`.text_proxy` (fidelity with a real LM),
:mod:`.report` (JSON, markdown, plots), :mod:`.checkpoint_cost` (memory checkpoint size and
write / restore time, ``--checkpoint-cost``).
"""
