"""A stand-in ``vllm`` package for the CPU tests (vLLM needs a GPU): the toolkit's engine code runs for real
against it; each test gives the ``LLM`` class that plays the part it checks."""

from __future__ import annotations

import sys
import types


def install_fake_vllm(monkeypatch, llm: type | None = None) -> types.ModuleType:
    """Put a fake ``vllm`` (``LLM``, ``SamplingParams``) and ``vllm.inputs`` (``TokensPrompt``) into
    ``sys.modules`` for the test; the factories return their keyword arguments, so tests can read them back."""
    module = types.ModuleType("vllm")
    module.SamplingParams = lambda **kw: kw
    if llm is not None:
        module.LLM = llm
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    return module
