"""Per-image latency of the defence at the `default` preset, side by side in one run (pytest-benchmark; not in the
default test run):

    python -m pytest benchmarks/test_bench_defense.py --benchmark-json benchmarks/results/defense_cpu.json
    python tools/speedup_table.py benchmarks/results/defense_cpu.json

- the lean runtime (onnxruntime CPU) on the shipped bundle, with each U-Net graph it carries: the general graph
  (x and t in), the float32 graphs with the timestep folded in, and their int8 versions;
- the same runtime on a bundle of the GroupNorm U-Net (exported on first use into .benchmarks/, not shipped), the
  shape the model had for training: the ablation's starting point;
- the PyTorch reference with the same weights and settings, eager and under torch.compile (Inductor, freezing).

Each round defends the same 8 MNIST test images as one batch or one image at a time (batch 1: a camera pipeline's
frame by frame); extra_info holds milliseconds per image. The same run measures the CPU's float32 and int8
matrix-product rates, the floors that tools/speedup_table.py sets beside them.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.conftest import BATCH
from diffdefense.reference.defense import ReferenceDefense
from diffdefense.runtime.defender import Defender
from diffdefense.settings import PRESETS
from diffdefense.shipped import BUNDLES_DIR
from diffdefense.training.loading import load_classifier, load_unet
from diffdefense.training.quality import unet_size

BATCH_SIZES = (BATCH, 1)
PRESET = "default"
SHIPPED_UNET = "unet_bn"  # the U-Net of the shipped MNIST bundle
# runtime variant -> (bundle, Defender options)
RUNTIME_VARIANTS = {
    "GroupNorm U-Net, general graph": ("groupnorm", dict(unet_graphs="general")),
    "GroupNorm U-Net, folded timesteps": ("groupnorm", dict(unet_graphs="folded")),
    "BatchNorm U-Net, general graph": ("shipped", dict(unet_graphs="general")),
    "BatchNorm U-Net, folded timesteps": ("shipped", dict(unet_graphs="folded")),
    "BatchNorm U-Net, folded timesteps, int8": ("shipped", dict(unet_graphs="folded", precision="int8")),
}
REFERENCE_VARIANTS = {
    "GroupNorm U-Net, eager": ("unet", False),
    "BatchNorm U-Net, eager": (SHIPPED_UNET, False),
    "BatchNorm U-Net, torch.compile": (SHIPPED_UNET, True),
}


def chunks(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [images[i : i + batch_size] for i in range(0, len(images), batch_size)]


def record(benchmark, batch_size: int, **info) -> None:
    """Milliseconds per image: a round's median over the BATCH images it defended."""
    benchmark.extra_info.update(ms_per_image=1000 * benchmark.stats.stats.median / BATCH, batch_size=batch_size, **info)


@pytest.fixture(scope="module")
def bundles() -> dict[str, Path]:
    """The shipped MNIST bundle, and a bundle of the GroupNorm U-Net made once into .benchmarks/ (no threshold)."""
    groupnorm = Path(".benchmarks") / "bundles" / "mnist-groupnorm"
    if not (groupnorm / "manifest.json").is_file():
        from diffdefense.export.bundle import export_bundle

        export_bundle("mnist", groupnorm, PRESET, calibration_images=0, unet_name="unet", int8=False)
    return {"shipped": BUNDLES_DIR / "mnist", "groupnorm": groupnorm}


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("variant", list(RUNTIME_VARIANTS))
def test_runtime_onnxruntime_cpu(benchmark, images, bundles, variant, batch_size):
    bundle, options = RUNTIME_VARIANTS[variant]
    with Defender(bundles[bundle], PRESET, **options) as defender:
        labels = benchmark.pedantic(
            lambda: np.concatenate([defender(chunk).labels for chunk in chunks(images, batch_size)]),
            rounds=3,
            warmup_rounds=1,
        )
        record(
            benchmark,
            batch_size,
            preset=PRESET,
            backend=f"runtime onnxruntime CPU: {variant}",
            variant=variant,
            precision=options.get("precision", "float32"),
            unet_evaluations=defender.settings.unet_evaluations,
        )
    assert labels.shape == (BATCH,)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("variant", list(REFERENCE_VARIANTS))
def test_reference_pytorch_cpu(benchmark, images, variant, batch_size):
    unet_name, compiled = REFERENCE_VARIANTS[variant]
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
        preset=PRESET,
        backend=f"reference PyTorch CPU: {variant}",
        variant=variant,
        threads=torch.get_num_threads(),
    )
    assert labels.shape == (BATCH,)


@pytest.mark.parametrize("library", ["torch", "numpy"])
def test_sgemm_peak(benchmark, library):
    """The float32 rate this CPU attains at its best (a 2048 x 2048 matrix product, all threads, through torch's and
    numpy's BLAS; tools/speedup_table.py takes the faster), and the U-Net's FLOPs per evaluation: together the least
    time any float32 backend needs per image (the U-Net's small convolutions reach less than a large matrix product
    does)."""
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
        unet_flops_per_evaluation=unet_size(load_unet("mnist", name=SHIPPED_UNET)[0])["flops_per_image"],
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
        unet_flops_per_evaluation=unet_size(load_unet("mnist", name=SHIPPED_UNET)[0])["flops_per_image"],
    )
    assert benchmark.extra_info["gops"] > 0
