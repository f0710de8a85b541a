"""diffdefense info: which backends and extensions this machine has, and what a bundle holds."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import click

from diffdefense import __version__
from diffdefense.cli.common import dataset_option, main


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """What is installed, read without importing torch (slow) or initialising a GPU."""
    from diffdefense.runtime.backends import available_providers

    info = {
        "diffdefense": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": _version("numpy"),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "onnxruntime_providers": available_providers(),
        "tensorrt": _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt-cu13"),
        "polygraphy": _version("polygraphy"),
        "opencv": _version("opencv-python-headless") or _version("opencv-python"),
        "torch": _version("torch"),
        "torchattacks": _version("torchattacks"),
    }
    try:
        import diffdefense_fused

        info["cpp_ext"] = diffdefense_fused.build_info()
    except ImportError as err:
        info["cpp_ext"] = f"not installed ({err})"
    return info


def bundle_summary(path: Path) -> dict:
    """The manifest's essentials, after load_bundle checked every file."""
    from diffdefense.runtime.bundle import load_bundle
    from diffdefense.runtime.manifest import IMAGE_DTYPE, IMAGE_RANGE

    manifest = load_bundle(path).manifest
    return {
        "path": str(path),
        "dataset": manifest.dataset,
        "labels": list(manifest.labels),
        "image": {"shape": list(manifest.image_shape), "dtype": IMAGE_DTYPE, "range": list(IMAGE_RANGE)},
        "files": {name: entry.bytes for name, entry in manifest.files.items()},
        "roles": dict(manifest.roles),
        "default_preset": manifest.default_preset,
        "default_settings": manifest.default_settings.to_dict(),
        "default_precision": manifest.default_precision,
        "threshold": manifest.detection.threshold if manifest.detection is not None else None,
        "int8_threshold": manifest.detection.int8_threshold if manifest.detection is not None else None,
        "parity_max_abs_error": dict(manifest.parity) if manifest.parity is not None else None,
        "exported_with": dict(manifest.versions) if manifest.versions is not None else None,
        "checksums": "verified",
    }


@main.command("info")
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path), default=None, help="A bundle to describe.")
@dataset_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info_command(bundle, dataset, as_json) -> None:
    """Show the installed backends (onnxruntime providers, TensorRT, the cpp_ext extension and its GPU
    architectures, OpenCV) and what a bundle holds, after checking its checksums [default: the shipped bundle]."""
    from diffdefense.shipped import bundle_dir

    report = {"environment": environment(), "bundle": bundle_summary(bundle or bundle_dir(dataset))}
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    env = report["environment"]
    for key, value in env.items():
        if key == "cpp_ext" and isinstance(value, dict):
            archs = ", ".join(value.get("cuda_architectures") or []) or "none"
            value = f"{value['version']} (OpenMP {value['openmp']}, CUDA kernels for {archs})"
        elif isinstance(value, list):
            value = ", ".join(value) or "none"
        click.echo(f"{key:>22}: {value if value is not None else 'not installed'}")
    b = report["bundle"]
    click.echo(f"\nbundle {b['path']}: {b['dataset']}, labels {' '.join(b['labels'])}, image {b['image']['shape']}")
    for name, size in b["files"].items():
        click.echo(f"  {name:<18} {size / 1e6:6.2f} MB  sha256 verified")
    settings = b["default_settings"]
    click.echo(
        f"  default preset {b['default_preset']}: R {settings['num_candidates']}, L {settings['iterations']}, "
        f"T* {settings['num_steps']}, {settings['gradient']}; attack threshold {b['threshold']}"
    )
