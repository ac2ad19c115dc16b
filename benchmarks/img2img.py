"""Image-to-image and LoRA at SD-Turbo size: `make bench-img2img` (python benchmarks/img2img.py).

Random seeded SD-Turbo-size weights (benchmarks/int8.py), 512 px, the ONNX target, ONNX Runtime
on this CPU, everything side by side in one process:

    encoder    the AutoencoderKL encoder (34M parameters) exported fp32 and quantized W8A8 through
               the compiler's own policy (calibrated on the pictures of calibration/init_images,
               fitted to 512 px); its accuracy on those pictures mirrored left-right (not
               calibrated on) against torch fp32: PSNR of the latents (goal >= 35 dB)
    latency    median ms per component: the encoder fp32 and W8A8, the stepped denoiser (one program
               for text-to-image and every strength) against the baked text-to-image denoiser, the
               decoder; and the two chains a user waits for, text-to-image vs image-to-image
    lora       the seconds fusing a rank-8 LoRA into the UNet adds to a compile (PEFT's fuse, what
               compiler/lora.py runs), and the bytes it adds to the exported UNet: its weights change,
               their shapes do not (checked on the state dict, not by a second 3.5 GB export)

    python benchmarks/img2img.py --work /tmp/img2img
    python benchmarks/img2img.py --tiny          # smoke test, seconds
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, print_header, timed_runs, verdict

sys.path.insert(0, str(REPO))

import int8 as bench  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

GOAL_ENCODER_PSNR = 35.0
PICTURES = REPO / "calibration" / "init_images"


def _recipe(image: int, img2img: bool):
    from compiler.recipe import Component, Components, Image, Img2Img, Quantization, Recipe

    return Recipe(version=1, name="bench-img2img", family="eps-turbo", image=Image(image, image),
                  components=Components(vae_encoder=Component("int8", Quantization(scheme="w8a8"))),
                  img2img=Img2Img(strengths=(0.5,), images=str(PICTURES)) if img2img else None)


def _export(target, graph, folder: Path, options):
    folder.mkdir(parents=True, exist_ok=True)
    artifact = target.export(graph, folder, options)
    return artifact, target.runner(folder / artifact.main, options)


def _ms(run, feeds: dict, repeats: int) -> float:
    run(feeds)
    return 1000 * statistics.median(timed_runs(run, feeds, repeats))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", help="folder for the exported files (default: a temporary one)")
    p.add_argument("--tiny", action="store_true", help="toy-size student, to smoke-test the script")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--encoder-float-fraction", type=float, default=0.1,
                   help="weights the encoder's fallback may keep float when fully int8 misses the gate (default 0.1)")
    args = p.parse_args()
    image = 32 if args.tiny else 512
    print_header("img2img and LoRA (bench-img2img)", args.tiny, image, "onnxruntime", "peft")
    with tempfile.TemporaryDirectory(prefix="bench-img2img-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        _run(work, image, args)
    return 0


def _run(work: Path, image: int, args) -> None:
    import numpy as np
    import torch

    from compiler.cases import read_pictures
    from compiler.errors import ParityError
    from compiler.recipe import Component, Quantization
    from compiler.metrics import compare
    from compiler.parity import TOLERANCES
    from compiler.pipeline import torch_chain
    from compiler.quantization import QuantJob, quantize_component
    from compiler.targets.registry import get_target
    from compiler.wrap import wrap

    target = get_target("onnx")
    options = target.Options()
    student = bench._student(args.tiny, work)
    recipe = _recipe(image, img2img=True)
    wrapped = wrap(student, recipe)
    t2i = wrap(student, _recipe(image, img2img=False))
    pictures = read_pictures(recipe)
    rows = []
    # the encoder: fp32 export, W8A8 through the compiler's policy, accuracy on unseen (mirrored) pictures
    for name in ("vae_encoder", "denoiser", "vae_decoder"):
        from compiler.wrap import graph_module

        wrapped.graphs[name].module = graph_module(student, recipe, name)
    t2i.graphs["denoiser"].module = graph_module(student, _recipe(image, False), "denoiser")
    reference = torch_chain(wrapped, student)
    t0 = time.perf_counter()
    enc, enc_run = _export(target, wrapped.graphs["vae_encoder"], work / "float", options)
    export_s = time.perf_counter() - t0
    quantizer = target.quantizer("vae_encoder", "w8a8", enc, work / "float", work / "int8", options)
    (work / "int8").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    passed, kept = False, []
    for fraction in (0.0, args.encoder_float_fraction):   # fully int8 first; on a miss, the fallback
        spec = Component("int8", Quantization(scheme="w8a8", max_float_weight_fraction=fraction))
        job = QuantJob("vae_encoder", spec, reference, [p.name for p in pictures], 0,
                       TOLERANCES[("vae_encoder", "int8")], None, pictures)
        try:
            kept = quantize_component(job, quantizer)[0].fallback
            passed = True
            break
        except ParityError as exc:    # reported; the last int8 encoder built is still measured
            print(f"  encoder W8A8 (float weights allowed: {fraction:.0%}) missed the compile gate: {exc.message}")
    quantize_s = time.perf_counter() - t0
    int8_run = quantizer.runner()
    psnr = []
    for pic in pictures:
        mirrored = np.ascontiguousarray(pic.tensor[..., ::-1])
        with torch.no_grad():
            expected = wrapped.graphs["vae_encoder"].module(torch.from_numpy(mirrored)).numpy()
        psnr.append(compare(expected, int8_run({"image": mirrored})[0]).psnr_db)
    fp32_bytes = sum((work / "float" / f).stat().st_size for f in enc.files)
    int8_bytes = sum(f.stat().st_size for f in (work / "int8").rglob("*") if f.is_file())
    feeds = {"image": pictures[0].tensor}
    enc_fp32_ms, enc_int8_ms = _ms(enc_run, feeds, args.repeats), _ms(int8_run, feeds, args.repeats)

    # the denoiser: stepped (img2img bundle) vs baked (text-to-image bundle), and the decoder
    _, stepped_run = _export(target, wrapped.graphs["denoiser"], work / "stepped", options)
    _, baked_run = _export(target, t2i.graphs["denoiser"], work / "baked", options)
    _, dec_run = _export(target, wrapped.graphs["vae_decoder"], work / "decoder", options)
    from compiler.cases import calibration_cases

    case = calibration_cases(reference, ["a photo of a red fox in the snow"], 0, pictures)[0]
    embeds = reference.embed(case.tokens)
    init = enc_run({"image": case.picture.tensor})[0]
    stepped_feeds = {**reference.denoiser_feeds(embeds, case.z, init, 0.5)}
    baked_feeds = {n: v for n, v in stepped_feeds.items() if n not in ("init_latents", "step")}
    stepped_ms, baked_ms = _ms(stepped_run, stepped_feeds, args.repeats), _ms(baked_run, baked_feeds, args.repeats)
    dec_ms = _ms(dec_run, {"latents": stepped_run(stepped_feeds)[0]}, args.repeats)
    same = float(np.abs(stepped_run({**stepped_feeds, "step": reference.img2img.row(None)})[0]
                        - baked_run(baked_feeds)[0]).max())
    lora_s, lora_changed, lora_shapes = _lora(student)

    rows.append(f"  encoder      export {export_s:.1f} s, W8A8 quantize "
                f"{quantize_s:.1f} s, {fp32_bytes / 1e6:.1f} -> {int8_bytes / 1e6:.1f} MB, compile gate "
                f"{'passed' if passed else 'missed'}" + (f" keeping {len(kept)} layers float ({', '.join(kept)})"
                                                         if kept else ""))
    rows.append(f"  encoder W8A8 vs torch fp32 on {len(psnr)} mirrored pictures: worst {min(psnr):.1f} dB, "
                f"median {statistics.median(psnr):.1f} dB  (goal >= {GOAL_ENCODER_PSNR}: "
                f"{verdict(min(psnr) >= GOAL_ENCODER_PSNR)})")
    rows.append("")
    rows.append(f"  latency (median of {args.repeats}, ONNX Runtime CPU, ms)")
    rows.append(f"    encoder             fp32 {enc_fp32_ms:8.1f}   W8A8 {enc_int8_ms:8.1f}   ({enc_fp32_ms / enc_int8_ms:.2f}x)")
    rows.append(f"    denoiser            baked {baked_ms:7.1f}   stepped {stepped_ms:6.1f}   "
                f"(stepped / baked {stepped_ms / baked_ms:.3f}; text-to-image row vs baked: max-abs {same:.2g})")
    rows.append(f"    decoder             fp32 {dec_ms:8.1f}")
    t2i_total, i2i_total = baked_ms + dec_ms, enc_int8_ms + stepped_ms + dec_ms
    rows.append(f"    text-to-image chain (denoiser + decoder)            {t2i_total:8.1f}")
    rows.append(f"    image-to-image chain (W8A8 encoder + stepped + decoder) {i2i_total:8.1f}  "
                f"({i2i_total / t2i_total:.2f}x text-to-image; the text encoder is the same in both)")
    rows.append("")
    rows.append(f"  LoRA rank 8 on every attention projection of the UNet: fuse {lora_s:.1f} s added to a compile; "
                f"{lora_changed} weights changed, shapes unchanged: {verdict(lora_shapes)} (0 bytes added to the "
                f"exported graph's weights)")
    print("\n".join(rows))


def _lora(student) -> tuple[float, int, bool]:
    """Seconds to fuse a random rank-8 PEFT LoRA into the UNet as compiler/lora.py does (load the
    adapter, fuse at scale 1, unload), how many weights changed, whether every shape stayed."""
    import torch
    from peft import LoraConfig

    unet = student.denoiser
    before = {k: (v.shape, v.clone()) for k, v in unet.state_dict().items() if k.endswith("weight")}
    torch.manual_seed(1)
    t0 = time.perf_counter()
    unet.add_adapter(LoraConfig(r=8, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
                     adapter_name="bench")
    with torch.no_grad():    # PEFT starts B at zero (a no-op LoRA): a trained one is not
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    unet.fuse_lora(lora_scale=1.0, adapter_names=["bench"])
    unet.unload_lora()
    seconds = time.perf_counter() - t0
    after = unet.state_dict()
    changed = sum(1 for k, (_, w) in before.items() if not torch.equal(after[k], w))
    shapes = all(after[k].shape == s for k, (s, _) in before.items()) and set(after) >= set(before)
    return seconds, changed, shapes


if __name__ == "__main__":
    sys.exit(main())
