"""rectified-flow: InstaFlow / 2-rectified-flow students. diffusers has no pipeline for it;
the InstaFlow reference code integrates dx/dt = v from t=1000 (noise) to 0 with Euler steps
t_i = (1 - i/N) * 1000, x += v / N. One step is x0 = z + v(z, 1000)."""
from __future__ import annotations

import torch

from .common import BakedStep, UNetFamily, reject_unused

TIMESTEP = 1000.0


class RFStep(BakedStep):
    def __init__(self, student, recipe):
        super().__init__(student, recipe)
        self.register_buffer("timestep", torch.tensor([TIMESTEP]), persistent=False)

    def forward(self, prompt_embeds, noise, pooled_prompt_embeds=None):
        return noise + self._unet(noise, self.timestep, prompt_embeds, pooled_prompt_embeds)


class RectifiedFlowOneStep(UNetFamily):
    name = "rectified-flow"

    def constants(self, student, recipe) -> dict:
        reject_unused(self.name, recipe)
        return {"timestep": TIMESTEP, "dt": 1.0, "prediction_type": "velocity", "reference": "InstaFlow"}

    def denoiser(self, student, recipe):
        self.constants(student, recipe)
        return RFStep(student, recipe).eval()

    def oracle(self, student, recipe, prompt, noise):
        return None  # no diffusers pipeline; tests check the reference formula instead
