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

from .cases import Case, Picture, calibration_cases, heldout_cases
from .quantization import CHECK_PROMPTS
from .runtime import Chain
from .student import COMPONENTS
from .wrap import Graph, Wrapped, graph_module


@dataclass(frozen=True)
class Question:
    case: Case
    last: int          # index in COMPONENTS of the last component it runs through


def heldout_questions(chain: Chain, prompts: list[str], seed: int, pictures: list[Picture] = ()) -> list[Question]:
    """Every held-out case (cases.heldout_cases), through the whole chain."""
    return [Question(c, len(COMPONENTS) - 1) for c in heldout_cases(chain, prompts, seed, pictures)]


def calibration_questions(chain: Chain, prompts: list[str], seed: int, precisions: dict[str, str],
                          pictures: list[Picture] = ()) -> list[Question]:
    """What quantization.calibration_feeds and the fallback check ask of the reference: an int8
    component's inputs on every calibration case, and its outputs on the first CHECK_PROMPTS."""
    int8 = [COMPONENTS.index(n) for n in precisions if precisions[n] == "int8"]
    out = []
    for i, case in enumerate(calibration_cases(chain, prompts, seed, pictures)):
        last = max([k - 1 for k in int8] + [k for k in int8 if i < CHECK_PROMPTS], default=-1)
        if last >= 0:
            out.append(Question(case, last))
    return out


def compile_questions(reference: Chain, recipe, heldout: list[str], calibration: list[str],
                      precisions: dict[str, str], pictures: list[Picture] = ()) -> list[Question]:
    """Every question a compile's later stages ask the reference (pipeline.precisions: `precisions`)."""
    return heldout_questions(reference, heldout, recipe.parity.seed, pictures) + calibration_questions(
        reference, calibration, recipe.calibration.seed, precisions, pictures)


def ask(reference: Chain, name: str, questions: list[Question]) -> None:
    """Record `name`'s answers to every question that reaches it, as later stages will ask them
    (the same calls, so the same inputs: a tiled decoder is asked tile by tile)."""
    stop = COMPONENTS.index(name)
    runner = reference.runners[name]
    runner.recording = True
    for q in questions:
        if q.last >= stop:
            reference.case(q.case, upto=name)
    runner.recording = False


def one_at_a_time(student, recipe, wrapped: Wrapped, reference: Chain, questions: list[Question],
                  progress=None) -> Iterator[Graph]:
    """Each component's graph with its weights loaded and its answers recorded; released when
    the caller asks for the next. `reference`: pipeline.torch_chain over `wrapped`."""
    say = progress.step if progress else (lambda text: None)
    for name in wrapped.graphs:
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
