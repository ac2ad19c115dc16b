"""The on-device runtimes, measured here (`make bench-runtimes`).

1. Throughput, side by side in one run on the same inputs: the Swift runtime (onestep-bench,
   release build, Swift on Linux), the Kotlin runtime on this JVM and the Python reference
   (transformers' CLIPTokenizer, backed by the Rust tokenizers library; compiler.contract.noise on numpy;
   hashlib; compiler.contract.png): CLIP tokenizer prompts/s, noise values/s, SHA-256 MB/s (what opening a
   bundle costs: every file is hashed), PNG encode MB/s of RGB.
2. With --real WORK: an SD-Turbo-size fp32 ONNX bundle (random seeded weights, 512 px) is
   compiled into WORK (once; about 10 minutes and 10 GB of disk), then the Kotlin Pipeline runs
   it end to end with the Python reference engine, and the peak resident memory of the JVM (the
   runtime itself: verification, tokenizer, noise, wiring, pixels) and of the engine process
   (the models) is sampled from /proc, against the bundle's weight bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (OPENCLIP_H_TEXT, REPO, SD21_UNET, SD_TURBO_SCHEDULER, SD_VAE, TOKENS, machine,  # noqa: E402
                     verdict)

TOKENIZER = REPO / "students" / "shapes-rf" / "tokenizer"
PROMPTS = REPO / "calibration" / "calibration.txt"
NOISE_SHAPES = ("1x4x64x64", "1x4x128x128")   # SD-Turbo 512 px, SDXL 1024 px latents
SECONDS = 3.0


def kotlin_jar() -> str:
    done = subprocess.run([str(REPO / "runtimes/kotlin/build.sh")], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def kotlin_throughput(jar: str) -> dict:
    done = subprocess.run(["java", "-cp", jar, "dev.onestep.runtime.BenchKt", str(TOKENIZER), str(PROMPTS), str(TOKENS),
                           str(SECONDS), *NOISE_SHAPES], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def swift_throughput() -> dict:
    swift = shutil.which("swift") or "/opt/swift/usr/bin/swift"
    scratch = REPO / "build" / "swift"
    subprocess.run([swift, "build", "--quiet", "-c", "release", "--scratch-path", str(scratch), "--product", "onestep-bench"],
                   cwd=REPO / "runtimes" / "swift", check=True)
    done = subprocess.run([str(scratch / "release" / "onestep-bench"), str(TOKENIZER), str(PROMPTS), str(TOKENS), str(SECONDS),
                           *NOISE_SHAPES], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def python_throughput() -> dict:
    import numpy as np
    from transformers import CLIPTokenizer

    from compiler.contract import noise, png
    from compiler.prompts import read_prompts

    prompts = read_prompts(PROMPTS, "calibration")
    t0 = time.perf_counter()
    tok = CLIPTokenizer.from_pretrained(str(TOKENIZER), model_max_length=TOKENS)
    tok(prompts[0], padding="max_length", max_length=TOKENS, truncation=True)
    first_ms = (time.perf_counter() - t0) * 1e3

    def encode_all() -> int:
        for p in prompts:   # one call per prompt, as generate and the apps tokenize
            tok(p, padding="max_length", max_length=TOKENS, truncation=True, return_tensors="np")
        return len(prompts)

    out = {"load_and_first_prompt_ms": first_ms, "prompts_per_s": _rate(encode_all), "noise_values_per_s": {}}
    for spec in NOISE_SHAPES:
        shape = tuple(int(s) for s in spec.split("x"))
        n = int(np.prod(shape))
        out["noise_values_per_s"][spec] = _rate(lambda: (noise.gaussian(42, shape), n)[1])
    chunk = (np.arange(16 << 20) % 256).astype(np.uint8).tobytes()
    out["sha256_mb_per_s"] = _rate(lambda: (hashlib.sha256(chunk).digest(), len(chunk))[1]) / 1e6
    pixels = png.to_pixels(noise.gaussian(42, (1, 3, 512, 512)) * np.float32(0.25) + np.float32(0.5))
    out["png_encode_mb_per_s"] = _rate(lambda: (png.encode(pixels), pixels.size)[1]) / 1e6
    return out


def _rate(one_pass) -> float:
    for phase in range(2):   # warm-up pass of the same length, then the measured one
        items, start = 0, time.perf_counter()
        while time.perf_counter() - start < SECONDS:
            items += one_pass()
        if phase == 1:
            return items / (time.perf_counter() - start)
    raise AssertionError


def real_bundle(work: Path) -> Path:
    """SD-Turbo-size student (random seeded weights) -> fp32 ONNX bundle at 512 px, built once."""
    bundle = work / "bundle"
    if (bundle / "manifest.json").exists():
        return bundle
    student = work / "student"
    if not (student / "model_index.json").exists():
        _write_student(student)
    recipe = work / "recipe.yaml"
    recipe.write_text(f"version: 1\nname: sd-turbo-size\nfamily: eps-turbo\nimage: {{height: 512, width: 512}}\n"
                      f"parity: {{prompts: {REPO / 'calibration/heldout.txt'}, num_prompts: 1, seed: 3}}\n")
    subprocess.run([str(Path(sys.executable).parent / "compile"), "--target", "onnx", "--recipe", str(recipe),
                    "--model", str(student), "--out", str(bundle), "--force"], check=True)
    return bundle


def _write_student(folder: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from compiler.testing.seeded_students import write_tokenizer

    write_tokenizer(folder / "tokenizer", TOKENS)
    tok = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(**dict(OPENCLIP_H_TEXT, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id))).save_pretrained(folder / "text_encoder")
    UNet2DConditionModel(**SD21_UNET).save_pretrained(folder / "unet")
    AutoencoderKL(**SD_VAE).save_pretrained(folder / "vae")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD_TURBO_SCHEDULER))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "EulerDiscreteScheduler"]}))


def run_pipeline(jar: str, bundle: Path, work: Path) -> dict:
    """The Kotlin Pipeline on `bundle`, with the peak RSS of the JVM and of its engine child."""
    proc = subprocess.Popen(["java", "-cp", jar, "dev.onestep.runtime.EndToEndKt", str(bundle), "a red fox in the snow",
                             sys.executable, str(REPO), str(work / "kotlin"), "7"], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    peaks: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in [proc.pid, *_children(proc.pid)]:
                peaks[pid] = max(peaks.get(pid, 0), _rss(pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"Kotlin pipeline failed ({proc.returncode})")
    manifest = json.loads((bundle / "manifest.json").read_text())
    weights = sum(manifest["files"][f]["size"] for c in manifest["components"].values() for f in c["files"])
    engine = max((v for pid, v in peaks.items() if pid != proc.pid), default=0)
    return {"stages": stdout.strip().splitlines()[-1], "jvm_peak_rss": peaks.get(proc.pid, 0), "engine_peak_rss": engine,
            "weight_bytes": weights}


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", type=Path, metavar="WORK", help="also build and run an SD-Turbo-size bundle in WORK")
    args = parser.parse_args(argv)
    print(f"machine: {json.dumps(machine())}")
    jar = kotlin_jar()
    runs = {"Swift": swift_throughput(), "Kotlin (JVM)": kotlin_throughput(jar), "Python": python_throughput()}
    py = runs["Python"]
    print(f"tokenizer ({TOKENIZER.relative_to(REPO)}, {PROMPTS.relative_to(REPO)}, max_length {TOKENS}, one call per prompt)")
    for name, r in runs.items():
        print(f"  {name:<13} {r['prompts_per_s']:10.0f} prompts/s   load + first prompt {r['load_and_first_prompt_ms']:7.1f} ms"
              f"   / Python {r['prompts_per_s'] / py['prompts_per_s']:.2f}x")
    print("noise (splitmix64-box-muller-v1, values/s)")
    for spec in NOISE_SHAPES:
        print(f"  {spec:<12} " + "   ".join(f"{name} {r['noise_values_per_s'][spec] / 1e6:7.1f} M/s" for name, r in runs.items()))
    for key, what in (("sha256_mb_per_s", "SHA-256 (16 MiB chunks; Python: hashlib/OpenSSL)"),
                      ("png_encode_mb_per_s", "PNG encode (512 px of noise, MB/s of RGB)")):
        print(what)
        print("  " + "   ".join(f"{name} {r[key]:8.1f} MB/s" for name, r in runs.items()))
    if args.real:
        args.real.mkdir(parents=True, exist_ok=True)
        r = run_pipeline(jar, real_bundle(args.real), args.real)
        print(f"real-size bundle ({r['weight_bytes'] / 1e9:.2f} GB of weights): {r['stages']}")
        print(f"  JVM (the Kotlin runtime)   peak RSS {r['jvm_peak_rss'] / 1e6:8.0f} MB")
        ratio = r["engine_peak_rss"] / r["weight_bytes"]
        print(f"  engine (Python reference)  peak RSS {r['engine_peak_rss'] / 1e6:8.0f} MB = {ratio:.2f}x weights "
              f"(goal <= 1.5x: {verdict(ratio <= 1.5)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
