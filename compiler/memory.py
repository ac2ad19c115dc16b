"""A compile's peak memory, estimated per stage before any work from the model's safetensors
headers (no weight is read), so a compile that cannot fit is refused with the numbers instead
of being killed by the kernel halfway.

Model: the compile holds one component's fp32 weights at a time (compiler/streaming.py: each
is loaded, its reference answers recorded, exported and released), so each stage is the largest
component it works on, plus what the target was measured to add on top of it as a multiple of
its fp32 weights (Target.memory_factors, from the README's bench-export, bench-int8,
bench-coreml and bench-executorch runs at SD-Turbo size). A multi-size recipe's share stage
(every size's program of one component into one weight file) adds the third factor per size
(bench-sizes, which prints it). Verify opens one session at a time
beside the recorded answers. Activations are not modelled (a 1024 px decoder's are several GB:
tile it). An estimate, printed as one."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from .errors import EnvironmentError_

# bytes per parameter once loaded: load.py casts every weight to fp32, whatever the file stores
FP32 = 4


def component_parameters(model: Path, subfolders: list[str]) -> dict[str, int]:
    """Parameters per component folder, from the safetensors headers."""
    out = {}
    for sub in subfolders:
        total = 0
        for f in sorted((model / sub).glob("*.safetensors")):
            with open(f, "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                if n > f.stat().st_size - 8:   # a hostile length would make read() allocate it
                    raise ValueError(f"{f}: header length {n} past the end of the file")
                header = json.loads(fh.read(n))
            for name, entry in header.items():
                if name != "__metadata__":
                    count = 1
                    for d in entry["shape"]:
                        count *= d
                    total += count
        out[sub] = total
    return out


def estimate(model: Path, recipe, factors: tuple[float, float, float]) -> dict[str, int]:
    """Peak resident bytes per stage. `factors`: the target's (export, quantize, share) multiples."""
    from .families import get_family
    from .recipe import CALIBRATED, scheme_of

    layout = get_family(recipe.family).layout
    text = [t.encoder for t in layout.text if not t.optional or (model / t.encoder).is_dir()]
    decoder = recipe.components.vae_decoder
    # A decoder from another local folder is counted; one from a hub id is not yet on disk (a TAESD is small).
    decoder_folder = str(Path(decoder.model).expanduser() / decoder.subfolder) if decoder.model else decoder.subfolder
    folders = {"text_encoder": text, "denoiser": [layout.denoiser], "vae_decoder": [decoder_folder]}
    params = component_parameters(model, [s for subs in folders.values() for s in subs])
    weights = {name: FP32 * sum(params[s] for s in subs) for name, subs in folders.items()}
    largest = max(weights.values())
    export_k, quantize_k, share_k = factors
    out = {"load": weights["text_encoder"], "export": int((1 + export_k) * largest)}
    # calibrated (w8a8): the measured calibration factor; weight-only schemes rewrite the weights
    # once, as an export does
    int8 = [(1 + (quantize_k if scheme_of(n, c) in CALIBRATED else export_k)) * weights[n]
            for n, c in recipe.component_specs().items() if c.precision == "int8"]
    if int8:
        out["quantize"] = int(max(int8))
    sizes = len(recipe.sizes())
    if sizes > 1:   # one weight file for every size's program of each size-dependent component, one at a time
        out["share"] = int(share_k * sizes * max(weights["denoiser"], weights["vae_decoder"]))
    out["verify"] = 2 * largest
    return out


def machine_memory() -> int:
    """Physical memory of this machine (or of its cgroup limit, when lower)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(limit).read_text().strip()
        except OSError:
            continue
        if value.isdigit():
            total = min(total, int(value))
    return total


def describe(stages: dict[str, int]) -> str:
    return ", ".join(f"{stage} {gb(b)}" for stage, b in stages.items())


def gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def refuse_if_too_big(stages: dict[str, int], model: str) -> None:
    available = machine_memory()
    stage, peak = max(stages.items(), key=lambda kv: kv[1])
    if peak > available:
        raise EnvironmentError_(f"--model {model}", f"estimated peak memory {gb(peak)} ({stage}) exceeds this machine's "
                                                    f"{gb(available)} ({describe(stages)}); use a machine with more "
                                                    f"memory, or pass --skip-memory-check to try anyway")
