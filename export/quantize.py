"""int8 U-Net graphs by static post-training quantisation, calibrated on the defence's own U-Net inputs.

The defence feeds the U-Net latents that Adam moved far from N(0, I) (|x| reaches about 20), not the noised images
it was trained on, so the activation ranges are measured on inputs captured from the defence itself at each
timestep. Format: QDQ with per-channel int8 weights and uint8 activations (on x86, onnxruntime fuses a QDQ
convolution with uint8 activations into QLinearConv; with int8 activations it does not). Applied to a folded
timestep graph of the BatchNorm U-Net, every convolution, SiLU, residual add and concatenation runs in int8 and
the graph keeps one layout (a Transpose in and one out, no pair around each convolution).
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

CALIBRATION_BATCH = 64


class _Batches(CalibrationDataReader):
    """Equal batches (onnxruntime's histogram calibrators stack them): a last, shorter one is left out."""

    def __init__(self, samples: np.ndarray, batch: int) -> None:
        batch = min(batch, len(samples))
        self._batches = iter([{"x": samples[i : i + batch]} for i in range(0, len(samples) - batch + 1, batch)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


class RecordingUNet:
    """Wraps the runtime's U-Net runner and keeps every input it is given, by timestep."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.inputs: dict[int, list[np.ndarray]] = defaultdict(list)

    def run(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        self.inputs[int(t[0])].append(np.array(x, dtype=np.float32))
        return self.runner.run(x, t)


def capture_unet_inputs(defender, batches: list[np.ndarray]) -> dict[int, np.ndarray]:
    """The inputs the U-Net receives while `defender` defends each batch of images, by timestep: (N, 1, 28, 28)."""
    recorder = RecordingUNet(defender.unet)
    defender.unet = recorder
    try:
        for images in batches:
            defender(images)
    finally:
        defender.unet = recorder.runner
    return {t: np.concatenate(xs) for t, xs in recorder.inputs.items()}


def training_unet_inputs(bundle, num_images: int, seed: int) -> dict[int, np.ndarray]:
    """The inputs a float32 Defender on the loaded `bundle` gives its U-Net, by timestep, while it defends
    `num_images` training images chosen with `seed` (in batches of 8: one default-preset call of 96 candidates)."""
    from diffdefense.data import load_dataset
    from diffdefense.runtime.defender import Defender

    train = load_dataset(bundle.manifest.dataset, "train")
    chosen = np.sort(np.random.default_rng(seed).choice(len(train), size=num_images, replace=False))
    images = train.subset(chosen).float_images()
    with Defender(bundle.root, unet_graphs="folded", precision="float32") as defender:
        return capture_unet_inputs(defender, [images[i : i + 8] for i in range(0, len(images), 8)])


def quantize_unet_graph(
    float_graph: Path, int8_graph: Path, samples: np.ndarray, method: str = "percentile", seed: int = 0
) -> None:
    """float_graph (input x) -> int8_graph, activation ranges from `samples` (at most 2,048 of them, a seeded
    choice). method: 'minmax', or 'percentile' (the 99.999th percentile of each activation's magnitude; the large
    latents are rare, and MinMax would spend the uint8 range on them)."""
    if len(samples) > 2048:
        samples = samples[np.sort(np.random.default_rng(seed).permutation(len(samples))[:2048])]
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"Expected a calibration method in {sorted(methods)}, but got {method!r}.")
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # onnxruntime's symbolic shape inference gives up on the dynamic batch; ONNX's own is enough here.
        quant_pre_process(str(float_graph), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_graph),
            _Batches(samples.astype(np.float32), CALIBRATION_BATCH),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            extra_options={"CalibTensorRangeSymmetric": False},
        )


def graph_outputs(graphs: tuple[Path, ...], x: np.ndarray) -> list[np.ndarray]:
    """Each U-Net graph's output on the same inputs x, on the CPU."""
    import onnxruntime as ort

    return [
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0] for path in graphs
    ]


def relative_error(float_graph: Path, int8_graph: Path, x: np.ndarray) -> dict[str, float]:
    """The int8 graph's output against the float graph's on the same inputs: relative L2 error and the largest
    absolute difference."""
    outputs = graph_outputs((float_graph, int8_graph), x)
    difference = outputs[1] - outputs[0]
    return {
        "relative_l2": float(np.linalg.norm(difference) / np.linalg.norm(outputs[0])),
        "max_abs": float(np.abs(difference).max()),
    }


def quantize_timestep_graphs(
    folder: Path, float_graphs: dict[int, str], calibration_batches: list[np.ndarray], held_out: float = 0.25
) -> tuple[dict[int, str], dict[str, float]]:
    """An int8 graph beside each folded float32 graph in folder (a bundle with its manifest written), calibrated on
    the U-Net inputs a float32 Defender on that bundle produces for calibration_batches; the last `held_out` share
    of each timestep's captured inputs is kept out of calibration and measures the int8 error against float32.
    Returns timestep -> int8 file name, and the errors by name for the manifest's parity record."""
    from diffdefense.export.timestep_graphs import timestep_graph_name
    from diffdefense.runtime.defender import Defender

    with Defender(folder, unet_graphs="folded", precision="float32") as defender:
        captured = capture_unet_inputs(defender, calibration_batches)
    graphs, errors = {}, {}
    for t, float_name in float_graphs.items():
        inputs = captured[t]
        split = int(len(inputs) * (1 - held_out))
        name = timestep_graph_name(t, "int8")
        quantize_unet_graph(folder / float_name, folder / name, inputs[:split])
        measured = relative_error(folder / float_name, folder / name, inputs[split:])
        errors[f"unet_t{t}_int8_relative_l2"] = measured["relative_l2"]
        errors[f"unet_t{t}_int8_max_abs_error"] = measured["max_abs"]
        graphs[t] = name
    return graphs, errors
