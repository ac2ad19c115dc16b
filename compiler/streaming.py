"""One component's weights in memory at a time.

A compile asks the torch fp32 reference a known set of questions: the held-out prompts run
through the whole chain (verify, latency, decoder cost), and for each int8 component the
calibration prompts run up to its inputs (calibration) or through it (the fallback check on the
first CHECK_PROMPTS). So each component is loaded, asked every question that reaches it (the
answers of the components before it are replayed from their recordings), handed to the caller
(to export it), and released before the next is loaded: the peak holds the largest component,
not the student. A real-size SANA-Sprint (Gemma-2-2B text encoder) needs 14 GB in fp32 loaded
whole; one at a time, 10.5 GB at most.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .contract import noise
from .prompts import Tokens, tokenize
from .quantization import CHECK_PROMPTS
from .runtime import Chain
from .parity import heldout_inputs
from .student import COMPONENTS
from .wrap import Graph, Wrapped, graph_module


@dataclass(frozen=True)
class Question:
    tokens: Tokens
    z: np.ndarray
    last: int          # index in COMPONENTS of the last component it runs through


def heldout_questions(chain: Chain, prompts: list[str], seed: int) -> list[Question]:
    """Held-out prompt i with noise seed `seed + i`, through the whole chain."""
    return [Question(tokens, z, len(COMPONENTS) - 1) for _, tokens, z in heldout_inputs(chain, prompts, seed)]


def calibration_questions(chain: Chain, prompts: list[str], seed: int, precisions: dict[str, str]) -> list[Question]:
    """What quantization.calibration_feeds and the fallback check ask of the reference: an int8
    component's inputs on every calibration prompt, and its outputs on the first CHECK_PROMPTS."""
    int8 = [COMPONENTS.index(n) for n in COMPONENTS if precisions[n] == "int8"]
    out = []
    for i, prompt in enumerate(prompts):
        last = max([k - 1 for k in int8] + [k for k in int8 if i < CHECK_PROMPTS], default=-1)
        if last >= 0:
            out.append(Question(tokenize(chain.tokenizers, prompt), noise.gaussian(seed + i, chain.latent_shape), last))
    return out


def compile_questions(reference: Chain, recipe, heldout: list[str], calibration: list[str],
                      precisions: dict[str, str]) -> list[Question]:
    """Every question a compile's later stages ask the reference (pipeline.precisions: `precisions`)."""
    return heldout_questions(reference, heldout, recipe.parity.seed) + calibration_questions(
        reference, calibration, recipe.calibration.seed, precisions)


def ask(reference: Chain, name: str, questions: list[Question]) -> None:
    """Record `name`'s answers to every question that reaches it, as later stages will ask them
    (the same calls, so the same inputs: a tiled decoder is asked tile by tile)."""
    stop = COMPONENTS.index(name)
    runner = reference.runners[name]
    runner.recording = True
    for q in questions:
        if q.last < stop:
            continue
        embeds = reference.embed(q.tokens)
        if stop >= 1:
            latents = reference.denoise(embeds, q.z)
            if stop >= 2:
                reference.decode(latents)
    runner.recording = False


def one_at_a_time(student, recipe, wrapped: Wrapped, reference: Chain, questions: list[Question],
                  progress=None) -> Iterator[Graph]:
    """Each component's graph with its weights loaded and its answers recorded; released when
    the caller asks for the next. `reference`: pipeline.torch_chain over `wrapped`."""
    say = progress.step if progress else (lambda text: None)
    for name in COMPONENTS:
        if not student.loaded(name):
            say(f"{name}: loading its weights")
            student.load(name)
        graph = wrapped.graphs[name]
        if graph.module is None:
            graph.module = graph_module(student, recipe, name)
        stop = COMPONENTS.index(name)
        say(f"{name}: recording the fp32 reference on {sum(q.last >= stop for q in questions)} inputs")
        ask(reference, name, questions)
        yield graph
        graph.module = None
        reference.runners[name].release()
        student.release(name)
        return_freed_memory()


def record_reference(student, recipe, wrapped: Wrapped, reference: Chain, questions: list[Question],
                     progress=None) -> None:
    """Every answer recorded and every component released, nothing exported."""
    for _ in one_at_a_time(student, recipe, wrapped, reference, questions, progress):
        pass


def return_freed_memory() -> None:
    """Hand freed heap pages back to the OS now (glibc keeps them otherwise)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS): its allocator returns large blocks itself
        pass
