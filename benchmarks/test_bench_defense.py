"""Per-image latency of the defence at the `default` preset, side by side in one run (pytest-benchmark; not in the
default test run):

    python -m pytest benchmarks/test_bench_defense.py --benchmark-json benchmarks/results/defense_cpu.json
    python tools/speedup_table.py benchmarks/results/defense_cpu.json

- the lean runtime (onnxruntime CPU) on a bundle of each shipped U-Net (the shipped bundle for its own net, the
  others exported on first use into .benchmarks/): the GroupNorm net, the shape the model had for training and the
  ablation's starting point; the BatchNorm net; the narrow BatchNorm net. Per net, the graphs a bundle carries: the
  general graph (x and t in), the float32 graphs with the timestep folded in, and their int8 versions;
- the PyTorch reference with the same weights and settings, eager and under torch.compile (Inductor, freezing).

Each round defends the same 8 MNIST test images as one batch or one image at a time (batch 1: a camera pipeline's
frame by frame); extra_info holds milliseconds per image. The same run measures the CPU's float32 and int8
matrix-product rates, the floors that tools/speedup_table.py sets beside them.
"""

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.conftest import BATCH
from diffdefense.reference.defense import ReferenceDefense
from diffdefense.runtime.backends import BackendOptions
from diffdefense.runtime.bundle import load_bundle
from diffdefense.runtime.defender import Defender
from diffdefense.settings import PRESETS
from diffdefense.shipped import BUNDLES_DIR, read_manifest
from diffdefense.training.loading import load_classifier, load_unet
from diffdefense.training.quality import unet_size

BATCH_SIZES = (BATCH, 1)
PRESET = "default"
# float32 named: the mnist bundle's default precision on the CPU is int8, which has its own row
FOLDED, GENERAL = dict(unet_graphs="folded", precision="float32"), dict(unet_graphs="general", precision="float32")
SLEEP = BackendOptions(spin=False)  # onnxruntime's threads sleep between operators (the default spins within a call)
NARROW = "unet_bn_small_t15"  # the narrow net trained on the defence's timesteps; unet_bn_small runs as fast
# runtime variant -> (the U-Net its bundle carries, Defender options)
RUNTIME_VARIANTS = {
    "GroupNorm U-Net, general graph": ("unet", GENERAL),
    "GroupNorm U-Net, folded timesteps": ("unet", FOLDED),
    "BatchNorm U-Net, general graph": ("unet_bn", GENERAL),
    "BatchNorm U-Net, folded timesteps": ("unet_bn", FOLDED),
    "BatchNorm U-Net, folded timesteps, int8": ("unet_bn", dict(FOLDED, precision="int8")),
    "BatchNorm U-Net, folded timesteps, threads sleep between operators": ("unet_bn", dict(FOLDED, backend=SLEEP)),
    "narrow BatchNorm U-Net, folded timesteps": (NARROW, FOLDED),
    "narrow BatchNorm U-Net, folded timesteps, threads sleep between operators": (NARROW, dict(FOLDED, backend=SLEEP)),
}
# reference variant -> (U-Net, compiled); the speedup table sets each runtime row beside the references of its net
REFERENCE_VARIANTS = {
    "GroupNorm U-Net, eager": ("unet", False),
    "BatchNorm U-Net, eager": ("unet_bn", False),
    "BatchNorm U-Net, torch.compile": ("unet_bn", True),
    "narrow BatchNorm U-Net, eager": (NARROW, False),
    "narrow BatchNorm U-Net, torch.compile": (NARROW, True),
}


def chunks(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [images[i : i + batch_size] for i in range(0, len(images), batch_size)]


def record(benchmark, batch_size: int, unet_name: str, **info) -> None:
    """Milliseconds per image (a round's median over the BATCH images it defended) and the net's FLOPs."""
    benchmark.extra_info.update(
        ms_per_image=1000 * benchmark.stats.stats.median / BATCH,
        batch_size=batch_size,
        unet=unet_name,
        unet_flops_per_evaluation=unet_flops(unet_name),
        **info,
    )


@functools.cache
def unet_flops(unet_name: str) -> float:
    return unet_size(load_unet("mnist", name=unet_name)[0])["flops_per_image"]


def shipped_or_skip(unet_name: str) -> None:
    if f"mnist/{unet_name}.safetensors" not in read_manifest()["files"]:
        pytest.skip(f"no shipped MNIST {unet_name} weights: train them (docs/training.md)")


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


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("variant", list(RUNTIME_VARIANTS))
def test_runtime_onnxruntime_cpu(benchmark, images, variant, batch_size):
    unet_name, options = RUNTIME_VARIANTS[variant]
    shipped_or_skip(unet_name)
    with Defender(bundle_of(unet_name), PRESET, **options) as defender:
        labels = benchmark.pedantic(
            lambda: np.concatenate([defender(chunk).labels for chunk in chunks(images, batch_size)]),
            rounds=3,
            warmup_rounds=1,
        )
        record(
            benchmark,
            batch_size,
            unet_name,
            preset=PRESET,
            backend=f"runtime onnxruntime CPU: {variant}",
            variant=variant,
            precision=defender.precision,
            unet_evaluations=defender.settings.unet_evaluations,
        )
    assert labels.shape == (BATCH,)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("variant", list(REFERENCE_VARIANTS))
def test_reference_pytorch_cpu(benchmark, images, variant, batch_size):
    unet_name, compiled = REFERENCE_VARIANTS[variant]
    shipped_or_skip(unet_name)
    unet, schedule = load_unet("mnist", name=unet_name)
    if compiled:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights as constants: conv-BatchNorm folding and prepacked kernels
        unet = torch.compile(unet.eval(), dynamic=False)
    defense, classifier = ReferenceDefense(unet, schedule, PRESETS[PRESET]), load_classifier("mnist", "model_a")

    def defend_and_classify():
        with torch.no_grad():
            return torch.cat(
                [
                    classifier(defense.reconstruct(torch.from_numpy(chunk)).images).argmax(1)
                    for chunk in chunks(images, batch_size)
                ]
            )

    # torch.compile compiles once per input shape, in the warm-up round
    labels = benchmark.pedantic(defend_and_classify, rounds=3, warmup_rounds=1)
    record(
        benchmark,
        batch_size,
        unet_name,
        preset=PRESET,
        backend=f"reference PyTorch CPU: {variant}",
        variant=variant,
        reference="torch.compile" if compiled else "eager",
        threads=torch.get_num_threads(),
    )
    assert labels.shape == (BATCH,)


@pytest.mark.parametrize("library", ["torch", "numpy"])
def test_sgemm_peak(benchmark, library):
    """The float32 rate this CPU attains at its best (a 2048 x 2048 matrix product, all threads, through torch's and
    numpy's BLAS; tools/speedup_table.py takes the faster), and the U-Net's FLOPs per evaluation: together the least
    time any float32 backend needs per image with each row's U-Net (its small convolutions reach less than a large
    matrix product does)."""
    n = 2048
    a, b = torch.randn(n, n, generator=torch.Generator().manual_seed(0)), torch.randn(n, n)
    multiply = torch.mm if library == "torch" else np.matmul
    if library == "numpy":
        a, b = a.numpy(), b.numpy()
    benchmark.pedantic(multiply, args=(a, b), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(
        backend="sgemm float32",
        library=library,
        gflops=2 * n**3 / benchmark.stats.stats.min / 1e9,
        threads=torch.get_num_threads(),
    )
    assert benchmark.extra_info["gflops"] > 0


def test_int8_gemm_peak(benchmark):
    """The int8 rate of onnxruntime's own kernel (MatMulInteger, uint8 x int8 -> int32, 2048 x 2048, the kernel
    family its QLinearConv uses): the floor for the int8 graphs, measured the same way as the float32 one."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    n = 2048
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
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    benchmark.pedantic(session.run, args=(None, {"a": a}), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(
        backend="gemm int8",
        library=f"onnxruntime {onnxruntime.__version__} MatMulInteger (onnx {onnx.__version__})",
        gops=2 * n**3 / benchmark.stats.stats.min / 1e9,
    )
    assert benchmark.extra_info["gops"] > 0
