"""Shared by the benchmarks: SD-Turbo-size configs, one child process per measurement (so a
peak RSS belongs to one measurement), and what machine the numbers came from."""
from __future__ import annotations

import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKENS = 77

# stabilityai/sd-turbo unet/config.json (SD 2.1 architecture)
SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    norm_num_groups=32, act_fn="silu", flip_sin_to_cos=True, freq_shift=0, upcast_attention=True,
)
# OpenCLIP ViT-H/14 text tower as diffusers ships it for SD 2.x (23 layers: penultimate layer)
OPENCLIP_H_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                       num_attention_heads=16, max_position_embeddings=TOKENS, hidden_act="gelu",
                       projection_dim=512, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
              layers_per_block=2, norm_num_groups=32, sample_size=768, scaling_factor=0.18215)
SD_TURBO_SCHEDULER = dict(_class_name="EulerDiscreteScheduler", num_train_timesteps=1000, beta_start=0.00085,
                          beta_end=0.012, beta_schedule="scaled_linear", prediction_type="epsilon",
                          timestep_spacing="trailing", steps_offset=1)

# --tiny: the same classes at toy size, to smoke-test a script in seconds
TINY_UNET = dict(SD21_UNET, sample_size=8, block_out_channels=(32, 64, 64, 64), attention_head_dim=(2, 4, 4, 4),
                 cross_attention_dim=32, layers_per_block=1, norm_num_groups=8)
TINY_TEXT = dict(OPENCLIP_H_TEXT, vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, projection_dim=32, bos_token_id=998, eos_token_id=999, pad_token_id=1)
TINY_VAE = dict(SD_VAE, block_out_channels=(8, 16, 16, 16), norm_num_groups=8, layers_per_block=1)


def timed_runs(run, feeds: dict, repeats: int) -> list[float]:
    """Wall-clock seconds of `repeats` calls of an already warmed-up runner."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - t0)
    return times


def interleaved_medians(runs: dict, feeds: dict, repeats: int) -> dict[str, float]:
    """Median wall-clock seconds per label of already warmed-up runners, timed in interleaved rounds
    (one call of each per round), so a slow moment of the machine hits every runner alike."""
    times = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            times[label] += timed_runs(run, feeds, 1)
    return {label: statistics.median(t) for label, t in times.items()}


def peak_rss_bytes() -> int:
    """This process's peak resident set so far (ru_maxrss never goes down)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class PeakRSS:
    """The peak of this process's resident set inside a `with` block, sampled every 20 ms from
    /proc (ru_maxrss cannot be reset, so it would report whatever was built before the block).
    `children=True`: the peak of its child processes' resident sets together instead (a tool the
    block runs in a subprocess). `added`: the peak less the resident set the block started from."""

    def __init__(self, interval: float = 0.02, children: bool = False):
        self.interval, self.start, self.peak, self.children = interval, 0, 0, children
        self._stop = threading.Event()

    @property
    def added(self) -> int:
        return self.peak - self.start

    @staticmethod
    def current(pid: int | str = "self") -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:          # a child that just exited
            pass
        return 0

    @classmethod
    def of_children(cls) -> int:
        me, total = os.getpid(), 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == me:
                total += cls.current(stat.parent.name)
        return total

    def _measure(self) -> int:
        return self.of_children() if self.children else self.current()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._measure())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = self._measure()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._measure())


def run_child(script: Path, args: list[str], echo_stderr: bool = False) -> dict:
    """Run `script` in a fresh interpreter and return the JSON object on its last stdout line,
    or {"error": ...} with the last stderr line. `echo_stderr` forwards the child's progress
    lines as they come (long real-size runs), still keeping the tail for the error message."""
    cmd = [sys.executable, str(script), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    tail: deque[str] = deque(maxlen=20)

    def pump() -> None:
        for line in proc.stderr:
            tail.append(line.rstrip())
            if echo_stderr:
                print(f"  | {line.rstrip()}", file=sys.stderr, flush=True)

    reader = threading.Thread(target=pump, daemon=True)  # drains stderr so a chatty child never blocks
    reader.start()
    stdout = proc.stdout.read()
    code = proc.wait()
    reader.join()
    if code != 0:
        last = next((l for l in reversed(tail) if l.strip()), "(no stderr)")
        if code == -signal.SIGKILL:
            last = "killed (SIGKILL: out of memory?)"
        return {"error": f"child exited {code}: {last}"}
    lines = stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": "child printed no JSON result line"}


def child_result(compute) -> None:
    """In a child process: quiet the libraries, compute, and print the result as the JSON line
    run_child reads."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from compiler.cli import _quiet_libraries

    _quiet_libraries()
    print(json.dumps(compute()), flush=True)


def print_header(title: str, tiny: bool, image: int, *packages: str) -> None:
    """The first line of a real-size benchmark: what was measured, on which machine, with what."""
    m, v = machine(), versions(*packages)
    scale = "TOY SIZES (--tiny): a smoke test, not a measurement" if tiny else \
        f"SD-Turbo size, random seeded weights, {image}x{image}"
    print(f"{title} benchmark ({scale}); {m['cpu']}, {m['cores']} cores; "
          + ", ".join(f"{k} {x}" for k, x in v.items()), flush=True)


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def machine() -> dict:
    """CPU model, core count and the SIMD flags that decide int8 speed on x86 (VNNI = int8 dot products)."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": usable,
            "avx2": "avx2" in flags, "avx512": "avx512f" in flags,
            "vnni": bool(flags & {"avx512_vnni", "avx_vnni", "avx_vnni_int8"}), "amx": "amx_int8" in flags}


def versions(*packages: str) -> dict:
    """Installed versions without importing the packages (torch alone takes seconds)."""
    from compiler.bundle import package_versions

    return package_versions(*packages)
