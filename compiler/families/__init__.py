"""Sampler families: the single-step math each student was distilled for.

A family turns a loaded Student into the denoiser graph with its step baked in, reports
the constants it folded (they go into manifest.json for the runtimes), and can run the
diffusers pipeline it must match (the oracle; tests compare the two). Its Layout says which
folders and classes a student of the family has, so the loader stays generic; its text
encoder graph turns token ids (and padding masks) into what the denoiser reads.
"""
from __future__ import annotations

from .interface import Family


def get_family(name: str) -> Family:
    from . import euler, flow_match, lcm, pixart, rectified_flow, trigflow

    families: dict[str, Family] = {
        "eps-turbo": euler.EulerOneStep("eps-turbo", prediction_type=None),
        "sample-lightning": euler.EulerOneStep("sample-lightning", prediction_type="sample"),
        "lcm": lcm.LCMOneStep(),
        "rectified-flow": rectified_flow.RectifiedFlowOneStep(),
        "trigflow-scm": trigflow.TrigFlowOneStep(),
        "pixart-onestep": pixart.PixArtOneStep(),
        "flow-match": flow_match.FlowMatchOneStep(),
    }
    return families[name]


def img2img_family(name: str) -> Family:
    """The family when it can ship img2img (families/stepped.py); RecipeError (exit 2) otherwise."""
    from ..errors import RecipeError
    from .stepped import WITHOUT

    family = get_family(name)
    if not hasattr(family, "img2img_rows"):
        raise RecipeError("img2img", f"family {name}: {WITHOUT[name]}; remove img2img")
    return family
