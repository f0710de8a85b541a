"""Writing a bundle: ONNX graphs, parity checks against PyTorch, and a manifest with every file's sha256.

The bundle is assembled in a temporary folder beside the target and renamed into place at the end, so a
half-written bundle never looks whole.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from diffdefense import __version__, shipped
from diffdefense.checksums import sha256_of
from diffdefense.data import dataset_labels, load_dataset
from diffdefense.detection_threshold import DEFAULT_DETECTION_SCORE, TARGET_FALSE_POSITIVE_RATE, clean_threshold
from diffdefense.export.onnx_export import export_classifier, export_unet, max_abs_error
from diffdefense.export.quantize import quantize_timestep_graphs
from diffdefense.export.timestep_graphs import export_timestep_graphs
from diffdefense.export.vjp_export import export_unet_vjp, vjp_max_abs_error
from diffdefense.respace import settings_timesteps
from diffdefense.runtime.bundle import MANIFEST_NAME
from diffdefense.runtime.manifest import BundleManifest, DetectionRecord, FileEntry
from diffdefense.settings import PRESETS
from diffdefense.training.loading import load_classifier, load_unet
from diffdefense.training.models import fold_batchnorm

PARITY_TOLERANCE = 1e-3
ROLES = {"unet": "unet.onnx", "unet_vjp": "unet_vjp.onnx", "classifier": "classifier.onnx"}


def parity_inputs(dataset: str, data_root: Path | None, schedule) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Random inputs, and real test images (noised to several levels for the U-Net)."""
    rng = np.random.default_rng(0)
    real = load_dataset(dataset, "test", data_root).subset(np.arange(16)).float_images()
    t = np.linspace(0, schedule.num_steps - 1, 16).astype(np.int64)
    noised = schedule.q_sample(real * 2 - 1, t, rng.standard_normal(real.shape))
    unet = {
        "random": {
            "x": rng.standard_normal((7, 1, 28, 28)).astype(np.float32),
            "t": rng.integers(0, schedule.num_steps, 7).astype(np.int64),
        },
        "real": {"x": noised.astype(np.float32), "t": t},
    }
    # The VJP's cotangent: random, as the loss gradients it will carry have no fixed pattern.
    unet_vjp = {
        kind: {**inputs, "v": rng.standard_normal(inputs["x"].shape).astype(np.float32)}
        for kind, inputs in unet.items()
    }
    return {
        "unet": unet,
        "unet_vjp": unet_vjp,
        "classifier": {"random": {"images": rng.random((7, 1, 28, 28), dtype=np.float32)}, "real": {"images": real}},
    }


def source_checksums(dataset: str, unet_name: str = "unet") -> dict[str, str]:
    """sha256 of the shipped weights the bundle was made from."""
    files = shipped.read_manifest()["files"]
    return {name: files[f"{dataset}/{name}.safetensors"]["sha256"] for name in (unet_name, "model_a")}


# The deployment-shaped U-Nets in the order a bundle prefers them: with ReLU (which int8 fuses into the convolutions),
# then with SiLU.
DEPLOYMENT_UNETS = ("unet_bn_relu", "unet_bn")


def default_unet(dataset: str) -> str:
    """The first deployment-shaped U-Net of DEPLOYMENT_UNETS shipped for the data set, else the GroupNorm 'unet'. The
    narrow nets, less accurate, are exported only when asked for (the mnist-fast bundle: --unet unet_bn_small_t15)."""
    files = shipped.read_manifest()["files"]
    return next((name for name in DEPLOYMENT_UNETS if f"{dataset}/{name}.safetensors" in files), "unet")


def calibrate_threshold(
    bundle_dir: Path,
    dataset: str,
    count: int,
    data_root: Path | None,
    seed: int = 0,
    target_fpr: float = TARGET_FALSE_POSITIVE_RATE,
) -> DetectionRecord:
    """The runtime's own detection scores (the default score) on clean *training-split* images (never test images)
    under the bundle's default settings; the threshold flags the top target_fpr of them. Calibrated on the float32
    U-Net graphs, and again on the int8 ones where the bundle has them: their clean scores run higher."""
    from diffdefense.runtime.bundle import load_bundle
    from diffdefense.runtime.defender import Defender

    train = load_dataset(dataset, "train", data_root)
    indices = np.sort(np.random.default_rng(seed).permutation(len(train))[:count])
    batches = [train.subset(indices[i : i + 50]).float_images() for i in range(0, count, 50)]

    def clean_scores(precision: str) -> np.ndarray:
        with Defender(bundle_dir, detection_score=DEFAULT_DETECTION_SCORE, precision=precision) as defender:
            return np.concatenate([defender(images).detection_score for images in batches])

    scores = clean_scores("float32")
    manifest = load_bundle(bundle_dir).manifest
    settings = manifest.default_settings
    has_int8 = set(settings_timesteps(settings)) <= set(manifest.folded_graphs("int8"))
    return DetectionRecord(
        threshold=clean_threshold(scores, target_fpr),
        target_fpr=target_fpr,
        calibration=f"{count} clean images of the {train.name} split, seed {seed}",
        settings=settings,
        clean_error_median=float(np.median(scores)),
        score=DEFAULT_DETECTION_SCORE,
        int8_threshold=clean_threshold(clean_scores("int8"), target_fpr) if has_int8 else None,
    )


def _file_entries(folder: Path, names) -> dict[str, FileEntry]:
    return {name: FileEntry(sha256_of(folder / name), (folder / name).stat().st_size) for name in names}


def calibration_inputs(dataset: str, count: int, data_root: Path | None, seed: int = 0) -> list[np.ndarray]:
    """Batches of 50 training-split images (never test images) for the int8 calibration: `count` clean ones, then
    the same under FGSM at eps 0.3 on Model A, so that the captured U-Net inputs include an attack's latents."""
    from diffdefense.reference.attacks import run_attack

    train = load_dataset(dataset, "train", data_root)
    indices = np.sort(np.random.default_rng(seed).permutation(len(train))[:count])
    images, labels = train.subset(indices).as_tensors()
    attacked = run_attack("FGSM", load_classifier(dataset, "model_a"), images, labels, seed=seed).numpy()
    both = np.concatenate([images.numpy(), np.clip(attacked, 0.0, 1.0)]).astype(np.float32)
    return [both[i : i + 50] for i in range(0, len(both), 50)]


def _write_manifest(folder: Path, manifest: BundleManifest) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n")


def export_bundle(
    dataset: str,
    out_dir: Path,
    preset: str = "default",
    data_root: Path | None = None,
    calibration_images: int = 200,
    unet_name: str | None = None,
    folded: bool = True,
    int8: bool | None = None,
    vjp: bool = True,
    default_precision: str = "float32",
) -> Path:
    """The bundle of DATASET's shipped models at out_dir, with `preset` as its default settings.

    unet_name: the shipped U-Net to export (None: default_unet). folded: also one float32 graph per timestep the
    preset uses, with the timestep folded in (export/timestep_graphs.py); int8: also their int8 versions (None: for
    a BatchNorm U-Net only; a GroupNorm graph is not quantised, its normalisation chain breaks the int8 layout),
    calibrated on the U-Net inputs the defence itself produces for calibration_images training images, clean and
    FGSM-attacked (export/quantize.py; needs folded and calibration_images > 0). calibration_images also sets the
    detection threshold (0: neither). vjp: also the U-Net's vector-Jacobian graph, which the full-gradient mode
    needs. default_precision: the U-Net graphs a Defender on the CPU runs when not told, 'float32' or 'int8' (which
    needs the int8 graphs: set it only where their accuracy was measured to hold)."""
    roles = ROLES if vjp else {role: name for role, name in ROLES.items() if role != "unet_vjp"}
    unet_name = unet_name or default_unet(dataset)
    unet, schedule = load_unet(dataset, name=unet_name)
    trained = getattr(unet, "trained_timesteps", schedule.num_steps)
    PRESETS[preset].check_trained_timesteps(trained, f"{dataset}'s {unet_name}")
    norm = getattr(unet, "norm", "group")
    if int8 is None:
        int8 = norm == "batch"
    elif int8 and norm != "batch":
        raise ValueError(
            f"int8 graphs are made from a BatchNorm U-Net only, but {dataset}'s {unet_name} uses {norm} norm: "
            "export it without int8, or export a BatchNorm U-Net."
        )
    if default_precision not in ("float32", "int8"):
        raise ValueError(f"Expected default_precision 'float32' or 'int8', but got {default_precision!r}.")
    if default_precision == "int8" and not (int8 and folded and calibration_images):
        raise ValueError(
            "default_precision 'int8' needs the int8 graphs: export with int8, folded graphs and calibration images."
        )
    unet = fold_batchnorm(unet)  # BatchNorm into its convolutions (a GroupNorm net is left as it is)
    classifier = load_classifier(dataset, "model_a")
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        export_unet(unet, tmp / "unet.onnx")
        export_classifier(classifier, tmp / "classifier.onnx")
        if vjp:
            export_unet_vjp(unet, tmp / "unet_vjp.onnx")
        parity, checks = {}, parity_inputs(dataset, data_root, schedule)
        measures = {
            "unet": lambda inputs: max_abs_error(tmp / "unet.onnx", unet, inputs),
            "unet_vjp": lambda inputs: vjp_max_abs_error(tmp / "unet_vjp.onnx", unet, inputs),
            "classifier": lambda inputs: max_abs_error(tmp / "classifier.onnx", classifier, inputs),
        }
        for role, measure in measures.items():
            if role not in roles:
                continue
            for kind, inputs in checks[role].items():
                error = measure(inputs)
                if error > PARITY_TOLERANCE:
                    raise RuntimeError(
                        f"{role}.onnx differs from PyTorch by {error:.2e} on {kind} inputs "
                        f"(tolerance {PARITY_TOLERANCE})."
                    )
                parity[f"{role}_{kind}_max_abs_error"] = error
        timestep_graphs = None
        if folded:
            timesteps = settings_timesteps(PRESETS[preset])
            float_graphs = export_timestep_graphs(unet, timesteps, tmp, checks["unet"], parity)
            timestep_graphs = {"float32": float_graphs}
        manifest = BundleManifest(
            dataset=dataset,
            labels=dataset_labels(dataset, data_root),
            image_shape=(1, 28, 28),
            betas=schedule.betas.tolist(),
            default_preset=preset,
            default_settings=PRESETS[preset],
            roles=roles,
            files=_file_entries(tmp, [*roles.values(), *(timestep_graphs or {}).get("float32", {}).values()]),
            parity=parity,
            sources=source_checksums(dataset, unet_name),
            unet_source=unet_name,
            timestep_graphs=timestep_graphs,
            unet_trained_timesteps=trained if trained < schedule.num_steps else None,
            versions={
                "diffdefense": __version__,
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
                "python": platform.python_version(),
            },
        )
        _write_manifest(tmp, manifest)
        if int8 and folded and calibration_images:
            int8_graphs, errors = quantize_timestep_graphs(
                tmp, timestep_graphs["float32"], calibration_inputs(dataset, calibration_images, data_root)
            )
            manifest = replace(
                manifest,
                files={**manifest.files, **_file_entries(tmp, int8_graphs.values())},
                timestep_graphs={**timestep_graphs, "int8": int8_graphs},
                parity={**manifest.parity, **errors},
                default_precision=default_precision,
            )
            _write_manifest(tmp, manifest)
        if calibration_images:
            detection = calibrate_threshold(tmp, dataset, calibration_images, data_root)
            manifest = replace(manifest, detection=detection)
            _write_manifest(tmp, manifest)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """tmp becomes out_dir. A bundle already there is set aside first and put back if the last rename fails, so
    the target holds the old bundle or the new one, never neither."""
    old = out_dir.with_name(f"{out_dir.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old.exists():
            os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
