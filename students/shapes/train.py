"""Train the `shapes-rf` one-step student from scratch (rectified-flow family, InstaFlow recipe).

    python -m students.shapes.train --out students/shapes-rf --seed 0

Stages (each seeded; wall time of each is recorded in <out>/training_stats.json):
  1 tokenizer  CLIP-format BPE trained on the training captions
  2 data       procedural scenes whose captions come from the training split only
  3 vae        AutoencoderKL 64x64x3 <-> 16x16x4; scaling_factor = 1 / std(latents)
  4 teacher    text-conditional rectified flow (UNet + CLIP text encoder, jointly, from
               scratch): x_t = s z + (1 - s) x, s ~ U(0, 1), t = 1000 s, target v = x - z
  5 pairs      (z, teacher ODE output) with TEACHER_STEPS Euler steps, training captions
  6 reflow     student (init = teacher) trained on the straight pairs at random t
  7 distill    one-step: v(z, 1000) regressed on x_teacher - z  (text encoder frozen since 4)
No classifier-free guidance anywhere: the teacher is sampled unguided, so there is nothing
for the student to absorb.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from students.shapes import scenes
from students.shapes.sample import T_MAX, euler
from students.shapes.tokenizer import train_clip_bpe

MODEL_MAX_LENGTH = 16
TEACHER_STEPS = 16


@dataclass(frozen=True)
class Budget:
    n_scenes: int = 8000
    vae_steps: int = 700
    vae_batch: int = 16
    teacher_steps: int = 900
    teacher_batch: int = 48
    n_pairs: int = 1536
    reflow_steps: int = 250
    distill_steps: int = 500
    student_batch: int = 48


QUICK = Budget(n_scenes=256, vae_steps=3, teacher_steps=3, n_pairs=64, reflow_steps=2, distill_steps=2,
               vae_batch=8, teacher_batch=8, student_batch=8)


def build_vae():
    from diffusers import AutoencoderKL
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=scenes.SIZE,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8,
        mid_block_add_attention=False)


def build_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel
    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length, hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(cfg)


def build_unet(cross_attention_dim: int):
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64), attention_head_dim=8, norm_num_groups=16,
        cross_attention_dim=cross_attention_dim)


def object_mask(x: torch.Tensor) -> torch.Tensor:
    """Saturated (object) pixels of images in [-1, 1]: the background is a neutral grey."""
    return ((x.max(1, keepdim=True).values - x.min(1, keepdim=True).values) > 0.3).float()


def lr_at(step: int, total: int, peak: float, warmup: int = 30) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def set_lr(opt, lr):
    for g in opt.param_groups:
        g["lr"] = lr


class Ema:
    def __init__(self, modules, decay: float):
        self.modules, self.decay, self.n = modules, decay, 0
        self.shadow = [[p.detach().clone() for p in m.parameters()] for m in modules]

    @torch.no_grad()
    def update(self):
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for m, sh in zip(self.modules, self.shadow):
            for s, p in zip(sh, m.parameters()):
                s.mul_(d).add_(p.detach(), alpha=1 - d)

    @torch.no_grad()
    def copy_to(self):
        for m, sh in zip(self.modules, self.shadow):
            for s, p in zip(sh, m.parameters()):
                p.copy_(s)


class Log:
    def __init__(self, path: Path):
        self.path, self.stats, self.t0 = path, {"stages": {}}, time.time()

    def stage(self, name: str, seconds: float, **extra):
        self.stats["stages"][name] = {"seconds": round(seconds, 1), **extra}
        print(f"[{time.time() - self.t0:7.0f}s] stage {name}: {seconds:.0f}s {extra}", flush=True)

    def write(self):
        self.stats["total_seconds"] = round(time.time() - self.t0, 1)
        self.path.write_text(json.dumps(self.stats, indent=2) + "\n")


def progress(name, step, total, loss, t0):
    if step % 50 == 0 or step == total - 1:
        print(f"  {name} {step}/{total} loss {loss:.4f} ({time.time() - t0:.0f}s)", flush=True)


def train(out: Path, seed: int, device: str, budget: Budget) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "training_stats.json")
    log.stats.update(seed=seed, device=device, budget=asdict(budget), torch_threads=torch.get_num_threads(),
                     teacher_steps_ode=TEACHER_STEPS)
    train_caps, _ = scenes.caption_split()

    # 1 tokenizer
    t = time.time()
    train_clip_bpe(sorted(train_caps), out / "tokenizer", MODEL_MAX_LENGTH)
    tok = CLIPTokenizer.from_pretrained(out / "tokenizer")
    log.stage("tokenizer", time.time() - t, vocab=len(tok))

    # 2 data
    t = time.time()
    imgs, caps, _ = scenes.make_dataset(budget.n_scenes, seed, train_caps)
    assert set(caps) <= train_caps
    ids = tok(caps, padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True, return_tensors="pt").input_ids
    x_img = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    log.stats["training_captions"] = sorted(set(caps))
    log.stage("data", time.time() - t, scenes=len(caps), unique_captions=len(set(caps)))

    # 3 vae
    t = time.time()
    torch.manual_seed(seed + 3)
    g = np.random.default_rng(seed + 3)
    vae = build_vae().to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    for step in range(budget.vae_steps):
        set_lr(opt, lr_at(step, budget.vae_steps, 2e-3, warmup=20))
        xb = x_img[g.integers(0, len(x_img), budget.vae_batch)].to(device)
        post = vae.encode(xb).latent_dist
        rec = vae.decode(post.sample()).sample
        # Objects cover a few percent of each scene; weighting their pixels 10x makes the
        # VAE learn colours and edges before it has perfected the plain background.
        weight = 1 + 9 * object_mask(xb)
        loss = ((rec - xb).abs() * weight).mean() + 0.5 * ((rec - xb).pow(2) * weight).mean() \
            + 1e-7 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress("vae", step, budget.vae_steps, loss.item(), t)
    vae.eval()
    with torch.no_grad():
        lat = torch.cat([vae.encode(x_img[i:i + 256].to(device)).latent_dist.mean.cpu() for i in range(0, len(x_img), 256)])
        rec = vae.decode(lat[:256].to(device)).sample.cpu()
    std = lat.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    lat = lat / std
    rec_u8 = np.round(((rec.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    from students.shapes.adherence import score_many
    vae_adh = float(score_many(rec_u8, caps[:256]).mean())
    psnr = float(10 * torch.log10(4 / (rec - x_img[:256]).pow(2).mean()))
    log.stage("vae", time.time() - t, scaling_factor=1.0 / std, latent_mean=lat.mean().item(),
              recon_psnr_db=psnr, recon_adherence=vae_adh)

    # 4 teacher
    t = time.time()
    torch.manual_seed(seed + 4)
    g = np.random.default_rng(seed + 4)
    te = build_text_encoder(tok).to(device)
    unet = build_unet(te.config.hidden_size).to(device)
    params = list(te.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    ema = Ema([te, unet], 0.995)
    for step in range(budget.teacher_steps):
        set_lr(opt, lr_at(step, budget.teacher_steps, 1e-3, warmup=50))
        idx = g.integers(0, len(lat), budget.teacher_batch)
        x = lat[idx].to(device)
        z = torch.randn_like(x)
        s = torch.rand(len(idx), device=device)
        xt = s[:, None, None, None] * z + (1 - s[:, None, None, None]) * x
        emb = te(ids[idx].to(device)).last_hidden_state
        loss = (unet(xt, s * T_MAX, encoder_hidden_states=emb).sample - (x - z)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        progress("teacher", step, budget.teacher_steps, loss.item(), t)
    ema.copy_to()
    te.eval().requires_grad_(False)
    unet.eval()
    log.stage("teacher", time.time() - t, final_loss=loss.item())
    teacher = copy.deepcopy(unet).requires_grad_(False)

    # 5 pairs
    t = time.time()
    torch.manual_seed(seed + 5)
    g = np.random.default_rng(seed + 5)
    pair_caps = [scenes.sample_caption(g, train_caps) for _ in range(budget.n_pairs)]
    pair_ids = tok(pair_caps, padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True, return_tensors="pt").input_ids
    zs, xs, embs = [], [], []
    with torch.no_grad():
        for i in range(0, budget.n_pairs, 256):
            emb = te(pair_ids[i:i + 256].to(device)).last_hidden_state
            z = torch.randn(len(emb), 4, 16, 16, device=device)
            xs.append(euler(teacher, z, emb, TEACHER_STEPS).cpu())
            zs.append(z.cpu())
            embs.append(emb.cpu())
    zs, xs, embs = torch.cat(zs), torch.cat(xs), torch.cat(embs)
    log.stage("pairs", time.time() - t, pairs=budget.n_pairs, ode_steps=TEACHER_STEPS)

    # 6 reflow, 7 distill (student starts from the teacher)
    student = unet.requires_grad_(True).train()
    for name, steps, one_step in (("reflow", budget.reflow_steps, False), ("distill", budget.distill_steps, True)):
        t = time.time()
        torch.manual_seed(seed + (6 if not one_step else 7))
        g = np.random.default_rng(seed + (6 if not one_step else 7))
        opt = torch.optim.AdamW(student.parameters(), lr=3e-4, weight_decay=0.0)
        ema = Ema([student], 0.99)
        for step in range(steps):
            set_lr(opt, lr_at(step, steps, 3e-4, warmup=20))
            idx = g.integers(0, budget.n_pairs, budget.student_batch)
            z, x, emb = zs[idx].to(device), xs[idx].to(device), embs[idx].to(device)
            s = torch.ones(len(idx), device=device) if one_step else torch.rand(len(idx), device=device)
            xt = s[:, None, None, None] * z + (1 - s[:, None, None, None]) * x
            loss = (student(xt, s * T_MAX, encoder_hidden_states=emb).sample - (x - z)).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            ema.update()
            progress(name, step, steps, loss.item(), t)
        ema.copy_to()
        log.stage(name, time.time() - t, final_loss=loss.item())
    student.eval().requires_grad_(False)

    # save: a StableDiffusionPipeline-loadable folder + the teacher UNet beside it
    pipe = StableDiffusionPipeline(
        vae=vae.cpu(), text_encoder=te.cpu(), tokenizer=tok, unet=student.cpu(),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    teacher.cpu().save_pretrained(out / "teacher_unet", safe_serialization=True)
    log.write()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("students/shapes-rf"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--quick", action="store_true", help="tiny step counts: a smoke test of the pipeline")
    for f, v in asdict(Budget()).items():
        ap.add_argument(f"--{f.replace('_', '-')}", type=int, default=None, help=f"default {v}")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    base = QUICK if a.quick else Budget()
    budget = Budget(**{f: (getattr(a, f) if getattr(a, f) is not None else v) for f, v in asdict(base).items()})
    train(a.out, a.seed, a.device, budget)


if __name__ == "__main__":
    main()
