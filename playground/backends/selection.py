"""Which engine runs a model, and why, from the machine's hardware and the request.

The rule: a request may name an engine; otherwise a model that an
OpenAI-compatible server serves (``PLAYGROUND_OPENAI_MODELS``) generates there, a
model with a GGUF source runs on llama.cpp when there is no CUDA device, and on
transformers when there is one. Encoders and encoder-decoders always run on
transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from playground.errors import EngineUnavailableError, InvalidParameterError
from playground.hardware import Hardware
from playground.models.catalog import FAMILIES, ModelSpec

LLAMA_CPP = "llama.cpp"
TRANSFORMERS = "transformers"
OPENAI = "openai"  # an OpenAI-compatible server elsewhere (llama.cpp's server, vLLM, TGI)
ENGINE_NAMES = (LLAMA_CPP, TRANSFORMERS, OPENAI)


@dataclass(frozen=True)
class EngineChoice:
    engine: str
    reason: str


def choose_engine(spec: ModelSpec, hardware: Hardware, requested: str = "auto",
                  served: Mapping[str, str] | None = None) -> EngineChoice:
    """The engine for ``spec``; ``served`` maps the catalog ids an OpenAI-compatible server serves to their served
    names (None: no server is configured)."""
    if requested not in ("auto", *ENGINE_NAMES):
        raise InvalidParameterError(f"Unknown engine {requested!r}; choose auto, {', '.join(ENGINE_NAMES)}.")
    if requested == OPENAI:
        if served is None:
            raise EngineUnavailableError(
                "No OpenAI-compatible server is configured: set PLAYGROUND_OPENAI_BASE_URL and "
                "PLAYGROUND_OPENAI_MODELS, or choose another engine.")
        if spec.id not in served:
            raise EngineUnavailableError(
                f"{spec.name} is not served by the OpenAI-compatible server (PLAYGROUND_OPENAI_MODELS lists "
                f"{', '.join(served)}): add {spec.id}=<served name> there, or choose another engine.")
        return EngineChoice(OPENAI, "requested")
    if requested == LLAMA_CPP:
        if spec.family == "encoder-decoder":
            raise EngineUnavailableError(
                f"{spec.name} is an encoder-decoder (text-to-text) model; llama.cpp here runs decoders only, so "
                f"use the transformers engine (or auto).")
        if not spec.has_gguf:
            raise EngineUnavailableError(
                f"{spec.name} has no GGUF source, so llama.cpp cannot run it; use the transformers engine."
            )
        return EngineChoice(LLAMA_CPP, "requested")
    if requested == TRANSFORMERS:
        return EngineChoice(TRANSFORMERS, "requested")
    if served and spec.id in served:
        return EngineChoice(OPENAI, f"served as {served[spec.id]!r} by the OpenAI-compatible server")
    if spec.family != "decoder":
        return EngineChoice(TRANSFORMERS, _torch_reason(hardware) + "; llama.cpp here serves decoders only")
    if hardware.cuda:
        return EngineChoice(TRANSFORMERS, _torch_reason(hardware))
    if spec.has_gguf:
        return EngineChoice(LLAMA_CPP, f"no CUDA, so the quantised GGUF runs on {hardware.cpu_threads} CPU threads")
    return EngineChoice(TRANSFORMERS, "no GGUF source, so " + _torch_reason(hardware))


def _torch_reason(hardware: Hardware) -> str:
    if hardware.cuda:
        return f"CUDA {hardware.cuda_name} in {'bf16' if hardware.bf16 else 'fp16'}"
    return "CPU in fp32"


def startup_line(hardware: Hardware, openai_url: str = "", served: Mapping[str, str] | None = None) -> str:
    """One line for the console: the engine each family will use and why (and the models a server serves)."""
    parts = []
    for family in FAMILIES:
        if family == "decoder":
            engine = TRANSFORMERS if hardware.cuda else f"{LLAMA_CPP} for GGUF models (else {TRANSFORMERS})"
            why = _torch_reason(hardware) if hardware.cuda else f"no CUDA; {hardware.cpu_threads} threads"
        else:
            engine, why = TRANSFORMERS, _torch_reason(hardware)
        parts.append(f"{family} -> {engine} ({why})")
    line = f"[playground] {hardware.summary}. Engines: " + "; ".join(parts) + "."
    if openai_url and served:
        line += f" {', '.join(served)} -> {OPENAI} (the OpenAI-compatible server at {openai_url})."
    return line
