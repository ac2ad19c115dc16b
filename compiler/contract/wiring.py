"""Which value feeds which component input, written into manifest.json so a runtime follows
data instead of knowing the layout (SD, SDXL with two tokenizers, later transformer families).

A source is "<producer>.<output>": a tokenizer's ids ("tokenizer.input_ids",
"tokenizer_2.input_ids") or padding mask ("tokenizer.attention_mask"), the seeded noise ("noise.sample"), or an earlier component's output
("text_encoder.prompt_embeds"); in an img2img bundle also the fitted picture ("init_image.pixels")
and the strength's step row ("sampler.step"). Components run in `order`; `image` names the final output."""
from __future__ import annotations

from dataclasses import dataclass

from .init_image import INIT_IMAGE_SOURCE, STEP_SOURCE
from .tokenizers import ID_INPUTS, MASK_INPUTS, NAMES

NOISE_SOURCE = "noise.sample"
# image-to-image values the runtime produces: the fitted picture and the chosen strength's step row
RUNTIME_INPUTS = {"image": INIT_IMAGE_SOURCE, "step": STEP_SOURCE}
IMAGE_SOURCE = "vae_decoder.image"


@dataclass(frozen=True)
class Wiring:
    order: tuple[str, ...]
    inputs: dict[str, dict[str, str]]      # component -> input name -> source
    outputs: dict[str, tuple[str, ...]]    # component -> output names, in the order its runner returns them
    image: str

    @classmethod
    def from_graphs(cls, graphs: dict) -> Wiring:
        produced: dict[str, str] = {}
        inputs = {}
        for name, graph in graphs.items():
            inputs[name] = {i: _source(i, produced) for i in graph.input_names}
            produced.update({o: f"{name}.{o}" for o in graph.output_names})
        return cls(tuple(graphs), inputs, {n: tuple(g.output_names) for n, g in graphs.items()}, IMAGE_SOURCE)

    @classmethod
    def from_manifest(cls, manifest: dict) -> Wiring:
        """ValueError (or KeyError/TypeError) when a key is missing or of the wrong type."""
        w = manifest["wiring"]
        order, image = w["order"], w["image"]
        if not isinstance(order, list) or not all(isinstance(n, str) for n in order) or not isinstance(image, str):
            raise ValueError("order must be a list of component names and image a source")
        inputs = {}
        for n in order:
            wired = w["inputs"][n]
            if not isinstance(wired, dict) or not all(isinstance(v, str) for v in wired.values()):
                raise ValueError(f"inputs.{n} must map input names to sources")
            inputs[n] = dict(wired)
        outputs = {n: tuple(o["name"] for o in manifest["components"][n]["outputs"]) for n in order}
        return cls(tuple(order), inputs, outputs, image)

    def as_manifest(self) -> dict:
        return {"order": list(self.order), "inputs": {n: dict(self.inputs[n]) for n in self.order}, "image": self.image}

    def problems(self, token_sources: set[str]) -> list[str]:
        """What a runtime could not follow: unknown or later producers, unwired inputs.
        `token_sources`: what the bundle's tokenizers produce ("tokenizer.input_ids", ...)."""
        available = {NOISE_SOURCE, *token_sources}
        found = []
        for name in self.order:
            for inp, src in self.inputs.get(name, {}).items():
                if src not in available:
                    found.append(f"wiring.inputs.{name}.{inp}: source {src!r} is not produced before {name}")
            available.update(f"{name}.{o}" for o in self.outputs.get(name, ()))
        if self.image not in available:
            found.append(f"wiring.image: {self.image!r} is not produced by any component")
        return found


def _source(input_name: str, produced: dict[str, str]) -> str:
    if input_name == "noise":
        return NOISE_SOURCE
    if input_name in RUNTIME_INPUTS:
        return RUNTIME_INPUTS[input_name]
    if input_name in ID_INPUTS:
        return f"{NAMES[ID_INPUTS.index(input_name)]}.input_ids"
    if input_name in MASK_INPUTS:
        return f"{NAMES[MASK_INPUTS.index(input_name)]}.attention_mask"
    return produced[input_name]
