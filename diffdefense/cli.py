"""The ``diffdefense`` command line. Torch is imported inside the commands that need it, so
``diffdefense --help`` and the runtime commands work with the lean install."""

from __future__ import annotations

from pathlib import Path

import click

from diffdefense import __version__
from diffdefense.data import DATA_ENV_VAR, DATASET_NAMES, DataError
from diffdefense.settings import PRESETS as DEFENSE_PRESETS
from diffdefense.shipped import ChecksumError
from diffdefense.training.configs import ClassifierConfig, DDPMConfig

CLASSIFIER, DDPM = ClassifierConfig(), DDPMConfig()  # the defaults, written once
PRESET_NAMES = tuple(DEFENSE_PRESETS)

dataset_option = click.option("--dataset", type=click.Choice(DATASET_NAMES), default="mnist", show_default=True)
out_option = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder for checkpoints; running the same command again resumes from it.",
)
ship_option = click.option(
    "--ship/--no-ship", default=True, show_default=True, help="Write the final weights into the shipped weights folder."
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")
data_root_option = click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar=DATA_ENV_VAR,
    help=f"Folder holding mnist/ and kmnist/ IDX folders [env {DATA_ENV_VAR}; default ../shared/data].",
)


class FriendlyErrors(click.Group):
    """Bad input, a changed model file or a missing backend ends the command with its message and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (DataError, ChecksumError, FileNotFoundError, ValueError, RuntimeError) as err:
            # Every ValueError here is a validation error written as a sentence for the user; RuntimeError covers
            # backends that cannot run (BackendError).
            raise click.ClickException(str(err)) from err


@click.group(cls=FriendlyErrors)
@click.version_option(__version__, prog_name="diffdefense")
def main() -> None:
    """DiffDefense: reconstruct inputs with a diffusion model before classifying them."""


@main.group()
def train() -> None:
    """Train the classifiers and the DDPM (needs the [train] extra: torch)."""


@train.command("classifier")
@dataset_option
@click.option("--arch", type=click.Choice(["model_a", "model_b"]), default=CLASSIFIER.arch, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=CLASSIFIER.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=CLASSIFIER.batch_size, show_default=True)
@click.option("--lr", type=float, default=CLASSIFIER.lr, show_default=True)
@click.option("--augment/--no-augment", default=CLASSIFIER.augment, show_default=True, help="Random affine jitter.")
@seed_option
@data_root_option
@out_option
@ship_option
def train_classifier_command(out, data_root, ship, **settings) -> None:
    """Train Model A or Model B; resumes from OUT's checkpoint if there is one."""
    from diffdefense.training.train_classifier import train_classifier

    record = train_classifier(ClassifierConfig(**settings), out, data_root, do_ship=ship)
    click.echo(f"test accuracy {record['final_metrics']['test_accuracy']:.4f}")


@train.command("ddpm")
@dataset_option
@click.option("--epochs", type=click.IntRange(min=1), default=DDPM.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=DDPM.batch_size, show_default=True)
@click.option("--lr", type=float, default=DDPM.lr, show_default=True)
@click.option("--num-steps", type=click.IntRange(min=2), default=DDPM.num_steps, show_default=True, help="T.")
@click.option(
    "--beta-start",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=DDPM.beta_start,
    show_default=True,
)
@click.option(
    "--beta-end",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=DDPM.beta_end,
    show_default=True,
    help="The official DiffDefense code uses 1e-4 .. 0.02 (see docs/training.md).",
)
@seed_option
@data_root_option
@out_option
@ship_option
def train_ddpm_command(out, data_root, ship, **settings) -> None:
    """Train the DDPM noise predictor; resumes from OUT's checkpoint if there is one."""
    from diffdefense.training.train_ddpm import train_ddpm

    record = train_ddpm(DDPMConfig(**settings), out, data_root, do_ship=ship)
    click.echo(f"final mean loss {record['final_metrics']['mean_loss_last_epoch']:.4f}")


@main.group()
def models() -> None:
    """Check and measure the shipped models."""


@models.command("verify")
def models_verify() -> None:
    """Check every shipped file against the sha256 in the manifest (exit 1 on a mismatch)."""
    from diffdefense import shipped

    for name in shipped.verify_all():
        click.echo(f"ok  {name}")


@models.command("accuracy")
@dataset_option
@click.option("--arch", type=click.Choice(["model_a", "model_b"]), multiple=True, default=("model_a", "model_b"))
@data_root_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_accuracy(dataset, arch, data_root, as_json) -> None:
    """Test accuracy of the shipped classifiers (KMNIST: the 2,000 held-out images of the split)."""
    import json

    from diffdefense.training.quality import classifier_accuracy

    results = [classifier_accuracy(dataset, a, data_root) for a in arch]
    for r in results:
        if not as_json:
            click.echo(f"{r['dataset']} {r['arch']}: {100 * r['accuracy']:.2f}% on {r['data']}")
    if as_json:
        click.echo(json.dumps(results, indent=2))


@models.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_stats(as_json) -> None:
    """The U-Net's parameter count and FLOPs per image."""
    import json

    from diffdefense.training.quality import unet_size

    size = unet_size()
    if as_json:
        click.echo(json.dumps(size))
    else:
        click.echo(
            f"U-Net {size['channels']}: {size['parameters']:,} parameters, "
            f"{size['flops_per_image'] / 1e6:.1f} MFLOP per image (conv + matmul, torch FlopCounterMode)"
        )


@models.command("sample")
@dataset_option
@click.option("-n", "--num-samples", type=click.IntRange(min=64), default=1000, show_default=True)
@seed_option
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("docs/figures"), show_default=True
)
def models_sample(dataset, num_samples, seed, out) -> None:
    """Sample the shipped DDPM: a 64-image grid PNG and the shipped Model A's verdict on the samples."""
    from diffdefense.training.quality import sample_quality, write_json

    result = sample_quality(dataset, num_samples, seed, out / f"{dataset}_ddpm_samples.png")
    write_json(result, out / f"{dataset}_ddpm_quality.json")
    click.echo(
        f"{dataset}: class shares {result['class_shares']}, mean top-class probability "
        f"{result['mean_top_probability']:.3f}; grid {result['grid']}"
    )


@main.command("evaluate")
@dataset_option
@click.option("--preset", type=click.Choice(sorted(PRESET_NAMES)), default="paper", show_default=True)
@click.option("-n", "--num-images", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--attack", "attacks", multiple=True, help="Attack to run (repeat); default: the paper's six.")
@click.option("--black-box/--no-black-box", default=True, show_default=True, help="Also transfer from Model B.")
@click.option("--batch-size", type=click.IntRange(min=1), default=50, show_default=True)
@seed_option
@data_root_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Report folder; its cache/ makes an interrupted run resume.",
)
def evaluate_command(dataset, preset, num_images, attacks, black_box, batch_size, seed, data_root, out) -> None:
    """Attack the classifier, defend, and write a report (JSON, markdown table, ROC curves, example grids)."""
    from diffdefense.reference.evaluation import EvaluationConfig, run_evaluation
    from diffdefense.reference.report import write_report
    from diffdefense.settings import PRESETS

    config = EvaluationConfig(
        dataset=dataset,
        num_images=num_images,
        seed=seed,
        black_box=black_box,
        batch_size=batch_size,
        settings=PRESETS[preset].with_(seed=seed),
        preset=preset,
        **({"attacks": tuple(attacks)} if attacks else {}),
    )
    click.echo(f"Report: {write_report(run_evaluation(config, out, data_root), out)}")


@main.command("export")
@dataset_option
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESET_NAMES)),
    default="paper",
    show_default=True,
    help="Defence settings the bundle carries as its defaults.",
)
@click.option(
    "--calibration-images",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Clean training-split images that set the attack threshold at 5 % false positives (0: none).",
)
@data_root_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Bundle folder.")
def export_command(dataset, preset, calibration_images, data_root, out) -> None:
    """Export the shipped models of DATASET to an ONNX bundle, checked against PyTorch."""
    import json

    from diffdefense.export.bundle import export_bundle

    path = export_bundle(dataset, out, preset, data_root, calibration_images)
    parity = json.loads((path / "manifest.json").read_text())["parity"]
    click.echo(f"Bundle {path}: " + ", ".join(f"{k} {v:.1e}" for k, v in parity.items()))


@main.command("defend")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--bundle",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Bundle folder [default: the shipped bundle of --dataset].",
)
@dataset_option
@click.option("--preset", type=click.Choice(sorted(PRESET_NAMES)), default=None, help="[default: the bundle's].")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def defend_command(inputs, bundle, dataset, preset, provider, batch_size, as_json) -> None:
    """Defend and classify images from .npy / .npz files; print labels, attack flags and latency."""
    import json

    import numpy as np

    from diffdefense.runtime.defender import Defender
    from diffdefense.runtime.inputs import read_image_file
    from diffdefense.shipped import bundle_dir

    defender = Defender(bundle or bundle_dir(dataset), preset)
    rows, per_image = [], []
    for path in inputs:
        file = read_image_file(path)
        for start in range(0, len(file.images), batch_size):
            result = defender(file.images[start : start + batch_size])
            per_image += [result.timings["total"] / len(result.labels)] * len(result.labels)
            for k, label in enumerate(result.labels):
                i = start + k
                rows.append(
                    {
                        "file": str(path),
                        "index": i,
                        "label": result.label_names[label],
                        "probability": round(float(result.probabilities[k, label]), 4),
                        "attack_flag": bool(result.attack_flag[k]),
                        "reconstruction_error": round(float(result.reconstruction_error[k]), 5),
                        **({"true_label": result.label_names[int(file.labels[i])]} if file.labels is not None else {}),
                        **({"attacked": bool(file.attacked[i])} if file.attacked is not None else {}),
                    }
                )
    latency = {
        "per_image_ms_median": 1000 * float(np.median(per_image)),
        "images": len(per_image),
        "settings": defender.settings.to_dict(),
        "provider": defender.unet.provider,
        "threshold": defender.threshold,
    }
    if as_json:
        click.echo(json.dumps({"results": rows, "latency": latency}, indent=2, ensure_ascii=False))
        return
    for r in rows:
        truth = f"  true {r['true_label']}" if "true_label" in r else ""
        attacked = f"  {'attacked' if r['attacked'] else 'clean':>8}" if "attacked" in r else ""
        flag = "FLAGGED" if r["attack_flag"] else "ok"
        click.echo(
            f"{Path(r['file']).name}[{r['index']:>2}]  label {r['label']} (p {r['probability']:.2f}){truth}"
            f"{attacked}  error {r['reconstruction_error']:.4f}  {flag}"
        )
    click.echo(
        f"{latency['images']} images, {latency['per_image_ms_median']:.0f} ms per image (median, batches of "
        f"{batch_size}, {latency['provider']}, {defender.settings.unet_evaluations} U-Net image evaluations "
        f"each); attack threshold {defender.threshold}"
    )
