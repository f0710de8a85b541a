"""The contenders of the side-by-side latency comparison at the `default` preset, and their timing in turns.

Each contender defends the same MNIST test images as one batch or one at a time (frame by frame):
- the lean runtime (onnxruntime CPU) on a bundle of each shipped U-Net (the shipped bundle for its own net, the
  others exported on first use into .benchmarks/): the GroupNorm net, the shape the model had for training and the
  ablation's starting point; the BatchNorm net, with SiLU and with ReLU; the narrow BatchNorm net. Per net, the
  graphs a bundle carries (the general graph, the float32 graphs with the timestep folded in, their int8 versions),
  each U-Net call cut in two parts run at the same time (the default on 2 or more cores) or unsharded;
- the PyTorch reference with the same weights and settings, eager and under torch.compile (Inductor, freezing).

benchmarks/test_bench_defense.py times them one after another with pytest-benchmark. On a shared cloud CPU one
round's time moves by up to a third within minutes, more than the differences between neighbouring rows, so
`python tools/side_by_side.py` times them in turns instead: every round runs every contender once, and drift touches
all alike. Its JSON has the pytest-benchmark layout that tools/speedup_table.py reads.
"""

from __future__ import annotations

import datetime
import functools
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import onnxruntime
import torch

from diffdefense.data import load_dataset
from diffdefense.machine import cpu_model
from diffdefense.reference.defense import ReferenceDefense
from diffdefense.runtime.backends import BackendOptions
from diffdefense.runtime.bundle import load_bundle
from diffdefense.runtime.defender import Defender
from diffdefense.settings import PRESETS
from diffdefense.shipped import BUNDLES_DIR, read_manifest
from diffdefense.training.loading import load_classifier, load_unet
from diffdefense.training.quality import unet_size

BATCH = 8  # MNIST test images per round
BATCH_SIZES = (BATCH, 1)
PRESET = "default"
# float32 named: the mnist bundle's default precision on the CPU is int8, which has its own row
FOLDED, GENERAL = dict(unet_graphs="folded", precision="float32"), dict(unet_graphs="general", precision="float32")
WHOLE = BackendOptions(shards=1)  # unsharded: each U-Net call whole (the default cuts it in two, run at the same time)
# unsharded, its threads sleeping between operators (the default lets them spin within a call); sharded
# sessions of one thread each have no thread to spin or sleep
SLEEP = BackendOptions(shards=1, spin=False)
NARROW = "unet_bn_small_t15"  # the narrow net trained on the defence's timesteps; unet_bn_small runs as fast
RELU = "unet_bn_relu"  # the BatchNorm net with ReLU in place of SiLU, which int8 fuses into the convolutions
# runtime variant -> (the U-Net its bundle carries, Defender options)
RUNTIME_VARIANTS = {
    "GroupNorm U-Net, general graph": ("unet", GENERAL),
    "GroupNorm U-Net, folded timesteps": ("unet", FOLDED),
    "BatchNorm U-Net, general graph": ("unet_bn", GENERAL),
    "BatchNorm U-Net, folded timesteps": ("unet_bn", FOLDED),
    "BatchNorm U-Net, folded timesteps, unsharded": ("unet_bn", dict(FOLDED, backend=WHOLE)),
    "BatchNorm U-Net, folded timesteps, int8": ("unet_bn", dict(FOLDED, precision="int8")),
    "BatchNorm U-Net, folded timesteps, int8, unsharded": (
        "unet_bn",
        dict(FOLDED, precision="int8", backend=WHOLE),
    ),
    "BatchNorm U-Net, folded timesteps, unsharded, threads sleep between operators": (
        "unet_bn",
        dict(FOLDED, backend=SLEEP),
    ),
    "BatchNorm U-Net with ReLU, folded timesteps": (RELU, FOLDED),
    "BatchNorm U-Net with ReLU, folded timesteps, int8": (RELU, dict(FOLDED, precision="int8")),
    "BatchNorm U-Net with ReLU, folded timesteps, int8, unsharded": (
        RELU,
        dict(FOLDED, precision="int8", backend=WHOLE),
    ),
    "narrow BatchNorm U-Net, folded timesteps": (NARROW, FOLDED),
    "narrow BatchNorm U-Net, folded timesteps, unsharded": (NARROW, dict(FOLDED, backend=WHOLE)),
    "narrow BatchNorm U-Net, folded timesteps, unsharded, threads sleep between operators": (
        NARROW,
        dict(FOLDED, backend=SLEEP),
    ),
}
# reference variant -> (U-Net, compiled); the speedup table sets each runtime row beside the references of its net
REFERENCE_VARIANTS = {
    "GroupNorm U-Net, eager": ("unet", False),
    "BatchNorm U-Net, eager": ("unet_bn", False),
    "BatchNorm U-Net, torch.compile": ("unet_bn", True),
    "BatchNorm U-Net with ReLU, eager": (RELU, False),
    "BatchNorm U-Net with ReLU, torch.compile": (RELU, True),
    "narrow BatchNorm U-Net, eager": (NARROW, False),
    "narrow BatchNorm U-Net, torch.compile": (NARROW, True),
}


def chunks(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [images[i : i + batch_size] for i in range(0, len(images), batch_size)]


def test_images(data_root: str | Path | None = None) -> np.ndarray:
    """The first BATCH MNIST test images."""
    return load_dataset("mnist", "test", data_root).subset(np.arange(BATCH)).float_images()


def has_weights(unet_name: str) -> bool:
    return f"mnist/{unet_name}.safetensors" in read_manifest()["files"]


@functools.cache
def unet_flops(unet_name: str) -> float:
    return unet_size(load_unet("mnist", name=unet_name)[0])["flops_per_image"]


@functools.cache
def bundle_of(unet_name: str) -> Path:
    """The shipped MNIST bundle that carries this U-Net (mnist, mnist-fast), else one exported once into .benchmarks/
    (the GroupNorm net without int8 graphs; its threshold and int8 calibration from 50 training images: speed only)."""
    for shipped in (BUNDLES_DIR / "mnist", BUNDLES_DIR / "mnist-fast"):
        if load_bundle(shipped).manifest.unet_source == unet_name:
            return shipped
    folder = Path(".benchmarks") / "bundles" / f"mnist-{unet_name}"
    if not (folder / "manifest.json").is_file():
        from diffdefense.export.bundle import export_bundle

        export_bundle("mnist", folder, PRESET, calibration_images=50, unet_name=unet_name)
    return folder


def runtime_contender(variant: str, images: np.ndarray, batch_size: int) -> tuple[Defender, Callable, dict]:
    """(the Defender, to close when done; a round that defends and classifies images in batches of batch_size and
    returns the labels; what the record says about the row)."""
    unet_name, options = RUNTIME_VARIANTS[variant]
    defender = Defender(bundle_of(unet_name), PRESET, **options)

    def defend_and_classify() -> np.ndarray:
        return np.concatenate([defender(chunk).labels for chunk in chunks(images, batch_size)])

    info = dict(
        backend=f"runtime onnxruntime CPU: {variant}",
        precision=defender.precision,
        unet_evaluations=defender.settings.unet_evaluations,
    )
    return defender, defend_and_classify, row_info(variant, batch_size, unet_name, **info)


def reference_contender(variant: str, images: np.ndarray, batch_size: int) -> tuple[Callable, dict]:
    """(a round of the PyTorch reference on images in batches of batch_size, returning the labels; the row's
    record). torch.compile compiles once per input shape, in the first round."""
    unet_name, compiled = REFERENCE_VARIANTS[variant]
    unet, schedule = load_unet("mnist", name=unet_name)
    if compiled:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights as constants: conv-BatchNorm folding and prepacked kernels
        # every contender's input shapes compiled, not left to eager: dynamo's limit (8) counts the compilations of
        # UNet.forward across all compiled nets and batch sizes of the run
        torch._dynamo.config.recompile_limit = 64
        unet = torch.compile(unet.eval(), dynamic=False)
    defense, classifier = ReferenceDefense(unet, schedule, PRESETS[PRESET]), load_classifier("mnist", "model_a")

    def defend_and_classify() -> np.ndarray:
        with torch.no_grad():
            batches = chunks(images, batch_size)
            return torch.cat([classifier(defense.reconstruct(torch.from_numpy(c)).images).argmax(1) for c in batches])

    info = dict(
        backend=f"reference PyTorch CPU: {variant}",
        reference="torch.compile" if compiled else "eager",
        threads=torch.get_num_threads(),
    )
    return defend_and_classify, row_info(variant, batch_size, unet_name, **info)


def row_info(variant: str, batch_size: int, unet_name: str, **info) -> dict:
    return dict(
        variant=variant,
        batch_size=batch_size,
        unet=unet_name,
        unet_flops_per_evaluation=unet_flops(unet_name),
        preset=PRESET,
        **info,
    )


def int8_gemm_session(n: int = 2048):
    """(an onnxruntime session of one n x n MatMulInteger, uint8 x int8 -> int32, the kernel family its QLinearConv
    uses; its input; a description): the int8 rate, the floor of the int8 graphs, measured like the float32 one."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8_gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    library = f"onnxruntime {onnxruntime.__version__} MatMulInteger (onnx {onnx.__version__})"
    return session, {"a": rng.integers(0, 256, (n, n), dtype=np.uint8)}, library


def peak_records(rounds: int = 9, n: int = 2048) -> list[dict]:
    """The int8 rate and the float32 matrix-product rates of torch's and numpy's BLAS (all threads; speedup_table
    takes the faster), best of rounds, as speedup_table reads them. Each is timed alone, int8 first: BLAS threads
    spin on after their call (OpenBLAS for about a tenth of a second) and halve the rate of whatever runs next."""
    a, b = (torch.randn(n, n, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1))
    a_np, b_np = a.numpy(), b.numpy()
    session, feed, library = int8_gemm_session(n)
    products = {"int8": lambda: session.run(None, feed), "torch": lambda: torch.mm(a, b), "numpy": lambda: a_np @ b_np}
    rate = {}
    for name, product in products.items():
        time.sleep(0.5)  # the threads of what ran before are asleep
        rate[name] = 2 * n**3 / min(time_in_turns({name: product}, rounds)[name]) / 1e9
    threads = torch.get_num_threads()
    float32 = [
        {"extra_info": {"backend": "sgemm float32", "library": lib, "gflops": rate[lib], "threads": threads}}
        for lib in ("torch", "numpy")
    ]
    return float32 + [{"extra_info": {"backend": "gemm int8", "library": library, "gops": rate["int8"]}}]


def time_in_turns(rounds_of: dict[str, Callable], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each round of every contender, the contenders taking turns within each round (after warmup
    untimed rounds: compilation, first-call allocations)."""
    for _ in range(warmup):
        for run in rounds_of.values():
            run()
    seconds: dict[str, list[float]] = {name: [] for name in rounds_of}
    for _ in range(rounds):
        for name, run in rounds_of.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def benchmark_record(info: dict, seconds: list[float]) -> dict:
    """One contender's entry in pytest-benchmark's layout: its stats and extra_info with ms per image (the median
    round over the BATCH images it defended)."""
    stats = {"median": float(np.median(seconds)), "min": min(seconds), "max": max(seconds), "rounds": len(seconds)}
    return {
        "name": info["variant"],
        "stats": stats,
        "extra_info": dict(info, ms_per_image=1000 * stats["median"] / BATCH),
    }


@click.command()
@click.option(
    "--variant", "variants", multiple=True, help="Runtime or reference variants [default: the BatchNorm net's]."
)
@click.option("--all", "every_variant", is_flag=True, help="Every runtime and reference variant.")
@click.option("--rounds", type=click.IntRange(min=1), default=11, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="JSON record.")
def main(variants: tuple[str, ...], every_variant: bool, rounds: int, out: Path) -> None:
    """Time the contenders in turns at batch 8 and frame by frame; the record prints with tools/speedup_table.py."""
    known = list(RUNTIME_VARIANTS) + list(REFERENCE_VARIANTS)
    if every_variant and variants:
        raise click.UsageError("Expected --all or --variant, not both.")
    chosen = known if every_variant else list(variants) or [v for v in known if v.startswith("BatchNorm U-Net")]
    if unknown := [v for v in chosen if v not in known]:
        raise click.BadParameter(f"expected variants among {known}, but got {unknown}", param_hint="--variant")
    images = test_images()
    defenders, rounds_of, infos = [], {}, {}
    for variant in chosen:
        for batch_size in BATCH_SIZES:
            key = f"{variant} @ {batch_size}"
            if variant in RUNTIME_VARIANTS:
                defender, rounds_of[key], infos[key] = runtime_contender(variant, images, batch_size)
                defenders.append(defender)
            else:
                rounds_of[key], infos[key] = reference_contender(variant, images, batch_size)
    seconds = time_in_turns(rounds_of, rounds)
    for defender in defenders:
        defender.close()
    record = {
        "machine_info": {"cpu": {"brand_raw": cpu_model()}},
        "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "how": f"in turns, {rounds} rounds after 1 untimed",
        "command": " ".join(["python tools/side_by_side.py", *map(shlex.quote, sys.argv[1:])]),
        "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "numpy": np.__version__},
        "benchmarks": [benchmark_record(infos[key], seconds[key]) for key in rounds_of] + peak_records(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    from diffdefense.speedup import speedup_markdown

    click.echo(speedup_markdown(record))
