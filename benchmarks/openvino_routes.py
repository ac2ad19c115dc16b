"""Which route to OpenVINO IR (python benchmarks/openvino_routes.py).

The OpenVINO target reads our ONNX export with OpenVINO's ONNX frontend (compiler/targets/openvino/
export.py). The other route is OpenVINO's PyTorch frontend on the wrapped torch module itself
(`openvino.convert_model(module, example_input=...)`). Random seeded SD-Turbo-size weights
(benchmarks/int8.py), 512 px, the UNet denoiser (the one-step sampler baked in) and the VAE decoder,
each through both routes in one process (Upsample2D in its phase form for both, as the target
exports it):

    convert    seconds from the torch module to a saved IR
    latency    both IRs compiled for this CPU as parity runs them (f32), interleaved rounds, medians
    accuracy   each IR against torch fp32 on the same seeded input (PSNR); ops in each IR

    python benchmarks/openvino_routes.py --work /tmp/routes
    python benchmarks/openvino_routes.py --tiny         # smoke test
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, interleaved_medians, print_header

sys.path.insert(0, str(REPO))

import int8 as bench  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from sizes import _inputs  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", help="folder for the IRs (default: a temporary one)")
    p.add_argument("--tiny", action="store_true", help="toy-size student, to smoke-test the script")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--components", default="denoiser,vae_decoder")
    args = p.parse_args()
    image = 64 if args.tiny else 512
    print_header("OpenVINO routes", args.tiny, image, "openvino", "onnx", "torch")
    with tempfile.TemporaryDirectory(prefix="bench-routes-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        print("\n".join(_run(work, image, args)))
    return 0


def _run(work: Path, image: int, args) -> list[str]:
    import openvino as ov
    import torch

    from compiler.metrics import compare
    from compiler.recipe import Image, Recipe
    from compiler.targets.onnx import OnnxTarget
    from compiler.targets.openvino.export import export, save
    from compiler.targets.openvino.run import CHECK_CONFIG, runner_of
    from compiler.targets.upsampling import phase_upsampling
    from compiler.wrap import graph_module, wrap

    student = bench._student(args.tiny, work)
    recipe = Recipe(version=1, name="bench-routes", family="eps-turbo", image=Image(image, image))
    rows = []
    for name in args.components.split(","):
        graph = wrap(student, recipe).graphs[name]
        graph.module = graph_module(student, recipe, name)
        feeds = _inputs(graph, seed=image)
        tensors = tuple(torch.from_numpy(feeds[n]) for n in graph.input_names)
        with torch.no_grad():
            expected = graph.module(*tensors).numpy()
        seconds, paths = {}, {}
        folder = work / name / "onnx"
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths["ONNX frontend"] = folder / export(graph, folder, OnnxTarget()).main
        seconds["ONNX frontend"] = time.perf_counter() - t0
        folder = work / name / "torch"
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with torch.no_grad(), phase_upsampling(graph.module):
            model = ov.convert_model(graph.module, example_input=tensors)
        for port, input_name in zip(model.inputs, graph.input_names):
            port.get_tensor().set_names({input_name})
        paths["PyTorch frontend"] = folder / save(model, folder, name, {}).main
        seconds["PyTorch frontend"] = time.perf_counter() - t0
        graph.module = None
        core = ov.Core()
        models = {route: core.read_model(str(path)) for route, path in paths.items()}
        runners = {route: runner_of(core.compile_model(model, "CPU", CHECK_CONFIG)) for route, model in models.items()}
        outputs = {route: run(feeds)[0] for route, run in runners.items()}    # also the warm-up
        medians = interleaved_medians(runners, feeds, args.repeats)
        base = medians["ONNX frontend"]
        rows.append(f"  {name}:")
        for route, model in models.items():
            ms = 1000 * medians[route]
            ops = len(model.get_ops())
            rows.append(f"    {route:16} convert {seconds[route]:6.1f} s; {ms:8.1f} ms = {ms / 1000 / base:.3f}x the "
                        f"ONNX route; vs torch fp32 {compare(expected, outputs[route]).psnr_db:.1f} dB; {ops} ops")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
