"""The command line's group, shared options and error handling. Torch is imported inside the commands that
need it, so ``diffdefense --help`` and the runtime commands work with the lean install."""

from __future__ import annotations

from pathlib import Path

import click

from diffdefense import __version__
from diffdefense.data import DATA_ENV_VAR, DATASET_NAMES, DataError, check_dataset_name
from diffdefense.runtime.backends import BackendError
from diffdefense.settings import PRESETS as DEFENSE_PRESETS
from diffdefense.shipped import WEIGHTS_ENV_VAR, ChecksumError
from diffdefense.training.configs import ClassifierConfig, DDPMConfig

CLASSIFIER, DDPM = ClassifierConfig(), DDPMConfig()  # the defaults, written once
PRESET_NAMES = tuple(DEFENSE_PRESETS)


def _dataset_name(ctx, param, value):
    try:
        return check_dataset_name(value)
    except DataError as err:
        raise click.BadParameter(str(err)) from None


dataset_option = click.option(
    "--dataset",
    default="mnist",
    show_default=True,
    callback=_dataset_name,
    help=f"A preset ({', '.join(DATASET_NAMES)}) or your own data set: the name of its folder of MNIST-format IDX "
    "files under the data root.",
)
out_option = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder for checkpoints; running the same command again resumes from it.",
)
ship_option = click.option(
    "--ship/--no-ship",
    default=True,
    show_default=True,
    help=f"Write the final weights into the weights folder [${WEIGHTS_ENV_VAR}, else the shipped one].",
)
extra_train_option = click.option(
    "--extra-train",
    default=None,
    metavar="FOLDER",
    help="Add the training split of this data folder (under the data root) to the data set's own, e.g. "
    "kmnist-train-part: official KMNIST training images beside the KMNIST preset's split of the test images.",
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")
data_root_option = click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar=DATA_ENV_VAR,
    help=f"Folder holding the data sets' IDX folders (mnist/, kmnist/, your own) [env {DATA_ENV_VAR}; default "
    "$XDG_CACHE_HOME/diffdefense or ~/.cache/diffdefense].",
)


class FriendlyErrors(click.Group):
    """Bad input, a changed model file or a missing backend ends the command with its message and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (DataError, ChecksumError, FileNotFoundError, ValueError, BackendError) as err:
            # Every ValueError here is a validation error written as a sentence for the user. Not RuntimeError in
            # general: click's own Exit (from --help) is one.
            raise click.ClickException(str(err)) from err


@click.group(cls=FriendlyErrors)
@click.version_option(__version__, prog_name="diffdefense")
def main() -> None:
    """DiffDefense: reconstruct inputs with a diffusion model before classifying them."""
