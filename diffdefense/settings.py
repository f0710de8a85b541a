"""Defence settings: one frozen dataclass, with named presets, shared by the PyTorch reference and the runtime."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

GradientMode = Literal["straight-through", "full"]
OutputMap = Literal["clip", "sigmoid"]
LatentInit = Literal["noise", "input", "blank"]


@dataclass(frozen=True)
class DefenseSettings:
    """How one input is reconstructed (DESIGN section 1, Algorithm 1).

    num_candidates: R latents optimised side by side; the best one wins.
    iterations: L runs of the reverse chain; L - 1 Adam updates of the latents between them, and the
        best candidate chosen on the last run (the official code's discarded last update, without its cost).
    num_steps: T*, reverse steps per run, respaced from the trained schedule.
    start_step: the trained time index the chain starts at (its noise level); T* <= start_step + 1.
    eta: 1 for DDPM steps, 0 for deterministic DDIM steps.
    lr: Adam's learning rate, decayed after each update as lr_i = lr * lr_decay ** (i / ceil(0.8 L))
        (Defense-GAN's rule, as the official code uses). first_lr overrides the first update's rate:
        the official code starts Adam at 0.02 and only then applies the rule from lr = 25.
    adam_betas: (0.5, 0.999) as the official code.
    gradient: 'straight-through' (U-Net outside the graph, as the official code) or 'full'
        (backpropagate through the U-Net, as the paper's text implies).
    output_map: chain output (model scale [-1, 1]) to image: 'clip' of (x + 1) / 2, or 'sigmoid' of it
        (the official code's sigmoid, on the official model's [0, 1] scale).
    fresh_noise: draw new step noise n_t for every run (the official code) instead of fixing it per input.
    latent_init: 'noise' starts the latents at N(0, I) (the paper); 'input' starts them at the input diffused
        to the chain's start level, sqrt(abar_s) (2 x* - 1) + sqrt(1 - abar_s) n (as SDEdit and DiffPure do),
        so the optimisation begins from a denoised version of the input rather than from a random image;
        'blank' starts them at an empty canvas (all background) diffused there, sqrt(1 - abar_s) n - sqrt(abar_s),
        so that the chain's first output is near background everywhere and the official optimiser's large update
        thresholds the input near 0.5 rather than at the levels of a random image's strokes.
    refine: after the best candidate is chosen, diffuse its image to the chain's start level and run the T* steps
        once more from there (DiffPure's purification, on the reconstruction rather than the input), its output
        mapped by 'clip' (the U-Net's own scale): T* more U-Net image evaluations per input. The official
        optimiser's reconstructions are 0/1 images; this pass gives back the soft strokes the classifier was trained
        on and smooths the isolated pixels an attack flipped. The detection score stays the chosen candidate's fit.
    refine_start_step: the trained index the refining pass starts at; None: the chain's start_step. A higher level
        drowns more of what an attack left in the chosen image (DiffPure's argument: the added noise must outweigh
        the perturbation) while the candidates still fit the input at the chain's lower level. Its T* steps are
        respaced over [0, refine_start_step] as the chain's are over [0, start_step].
    seed: seeds the latents, the step noise and the refining pass's noise.
    """

    num_candidates: int = 5
    iterations: int = 4
    num_steps: int = 15
    start_step: int = 14
    eta: float = 1.0
    lr: float = 0.1
    first_lr: float | None = None
    lr_decay: float = 0.1
    adam_betas: tuple[float, float] = (0.5, 0.999)
    gradient: GradientMode = "straight-through"
    output_map: OutputMap = "clip"
    fresh_noise: bool = False
    latent_init: LatentInit = "noise"
    refine: bool = False
    refine_start_step: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        """Every field checked and normalised (ints to int, numbers to float, adam_betas to a tuple), so that a
        settings object holds plain, JSON-ready values; anything else is a ValueError that says what came."""
        for name, (least, most) in _INTEGERS.items():
            if not (name in _OPTIONAL and getattr(self, name) is None):
                object.__setattr__(self, name, _integer(name, getattr(self, name), least, most, name in _OPTIONAL))
        for name in ("start_step", "refine_start_step"):
            if getattr(self, name) is not None and self.num_steps > getattr(self, name) + 1:
                raise ValueError(
                    f"Expected num_steps <= {name} + 1 (distinct trained indices), but got num_steps="
                    f"{self.num_steps} with {name}={getattr(self, name)}."
                )
        for name, (what, ok) in _REALS.items():
            value = getattr(self, name)
            if not (name == "first_lr" and value is None):
                object.__setattr__(self, name, _real(name, value, what, ok))
        object.__setattr__(self, "adam_betas", _betas(self.adam_betas))
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"Expected {name} {' or '.join(map(repr, choices))}, but got {_shown(value)}.")
        for name in ("fresh_noise", "refine"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Expected {name} to be True or False, but got {_shown(getattr(self, name))}.")

    @property
    def refine_start(self) -> int:
        """The trained index the refining pass starts at."""
        return self.start_step if self.refine_start_step is None else self.refine_start_step

    @property
    def highest_step(self) -> int:
        """The highest trained index the settings call the U-Net at (its refining pass's start where that is
        higher)."""
        return max(self.start_step, self.refine_start) if self.refine else self.start_step

    @property
    def num_updates(self) -> int:
        return self.iterations - 1

    def learning_rates(self) -> list[float]:
        """The rate of each of the L - 1 updates."""
        period = math.ceil(0.8 * self.iterations)
        rates = [self.lr * self.lr_decay ** (i / period) for i in range(self.num_updates)]
        if rates and self.first_lr is not None:
            rates[0] = self.first_lr
        return rates

    @property
    def unet_evaluations(self) -> int:
        """U-Net image evaluations per input: L x T* x R, plus T* with refine (full mode adds as many backward
        passes)."""
        return self.iterations * self.num_steps * self.num_candidates + (self.num_steps if self.refine else 0)

    def to_dict(self) -> dict:
        """Every field, but refine_start_step only where set: settings without it keep the form (and the hashes
        that name caches) they had before the field existed, and older runtimes read the bundles that do not use it."""
        values = asdict(self)
        if values["refine_start_step"] is None:
            del values["refine_start_step"]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> DefenseSettings:
        """From to_dict's output, also after a JSON round trip; unknown keys are refused."""
        if not isinstance(values, dict):
            raise ValueError(f"Expected defence settings as a dict, but got {_shown(values)}.")
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Expected defence settings, but got unknown keys {sorted(map(str, unknown))}.")
        return cls(**values)  # __post_init__ turns adam_betas' JSON list back into a tuple

    def with_(self, **changes) -> DefenseSettings:
        return replace(self, **changes)

    def check_trained_timesteps(self, trained: int | None, unet: str = "The U-Net") -> None:
        """Refuse settings that start the chain (or its refining pass) at or above `trained`, where a U-Net was trained
        on t < trained only (train ddpm --max-timestep; None: on every timestep)."""
        if trained is not None and self.highest_step >= trained:
            raise ValueError(
                f"{unet} was trained on timesteps below {trained} only, but the settings start the chain at index "
                f"{self.highest_step}: choose start_step (and refine_start_step) < {trained}, or a U-Net trained on "
                "every timestep."
            )


def parse_overrides(text: str) -> dict:
    """'num_steps=10,lr=0.5,output_map=clip' -> overrides of DefenseSettings' fields, each of its field's annotated
    type (a field that may be None also takes 'none'); a key that is no field, or a value that is not of its type, is a
    ValueError that says what came. `PRESETS[name].with_(**parse_overrides(text))` checks the values themselves."""
    # Annotations are strings here (from __future__ import annotations): 'int', 'float | None', 'bool', 'OutputMap'...
    types = {f.name: f.type for f in fields(DefenseSettings) if f.name != "adam_betas"}  # a pair: no KEY=VALUE
    out: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = (part.strip() for part in item.partition("="))
        if key not in types:
            raise ValueError(f"Expected KEY=VALUE with KEY a DefenseSettings field, but got {key!r} in {text!r}.")
        kind = types[key].removesuffix(" | None")
        if kind != types[key] and value.lower() == "none":
            out[key] = None
        elif kind == "bool":
            if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
                raise ValueError(f"Expected {key}=true or {key}=false, but got {item!r}.")
            out[key] = value.lower() in ("1", "true", "yes")
        elif kind in ("int", "float"):
            try:
                out[key] = int(value) if kind == "int" else float(value)
            except ValueError:
                what = "an integer" if kind == "int" else "a number"
                raise ValueError(f"Expected {key} to be {what}, but got {item!r}.") from None
        else:
            out[key] = value
    return out


# The range of each integer field; seeds stay within 64 bits so that settings always print and serialise.
_INTEGERS = {
    "num_candidates": (1, None),
    "iterations": (1, None),
    "num_steps": (1, None),
    "start_step": (0, None),
    "refine_start_step": (0, None),
    "seed": (0, 2**64 - 1),
}
_OPTIONAL = {"refine_start_step"}  # None means: as the chain
# Each real field: what it must be ("Expected eta in [0, 1] ..."), and the test of a finite value.
_REALS = {
    "eta": ("in [0, 1] (a finite number)", lambda x: 0.0 <= x <= 1.0),
    "lr": ("to be a finite number above 0 (learning rates are positive)", lambda x: x > 0.0),
    "first_lr": ("to be None or a finite number above 0 (learning rates are positive)", lambda x: x > 0.0),
    "lr_decay": ("to be a finite number in (0, 1]", lambda x: 0.0 < x <= 1.0),
}
_CHOICES = {
    "gradient": ("straight-through", "full"),
    "output_map": ("clip", "sigmoid"),
    "latent_init": ("noise", "input", "blank"),
}


def _integer(name: str, value: object, least: int, most: int | None, optional: bool = False) -> int:
    # bool is an int in Python, but True candidates is a mistake, not 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not least <= value <= (most or value):
        kind = ("None or " if optional else "") + ("a positive integer" if least == 1 else "a non-negative integer")
        bound = f" up to 2**{most.bit_length()} - 1" if most else ""
        raise ValueError(f"Expected {name} to be {kind}{bound}, but got {_shown(value)}.")
    return int(value)


def _real(name: str, value: object, what: str, ok) -> float:
    number = math.nan
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float's range
            pass
    if not (math.isfinite(number) and ok(number)):
        raise ValueError(f"Expected {name} {what}, but got {_shown(value)}.")
    return number


def _betas(value: object) -> tuple[float, float]:
    what = "to be two finite numbers in [0, 1)"
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"Expected adam_betas {what}, but got {_shown(value)}.")
    return tuple(_real("adam_betas", b, what, lambda x: 0.0 <= x < 1.0) for b in value)


def _shown(value: object) -> str:
    """A short repr; huge integers by size (their repr may exceed Python's digit limit and raise)."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


# The official code's defaults and choices (docs/official_code_notes.md), on the respaced trained schedule: U-Net
# indices 14..0 as there, each now meaning the noise level it was trained for.
_PAPER = DefenseSettings(
    num_candidates=5,
    iterations=4,
    num_steps=15,
    start_step=14,
    eta=1.0,
    lr=25.0,
    first_lr=0.02,
    lr_decay=0.1,
    gradient="straight-through",
    output_map="sigmoid",
    fresh_noise=True,
)

# The project's first default, chosen by tools/tune_preset.py on 200 attacked MNIST *training* images (the test
# images stay out of tuning; docs/results/preset_sweep_mnist_train200.json): the paper's optimiser and output map,
# but 12 candidates of 2 steps each and 5 runs, 120 U-Net image evaluations per input instead of 300. In this regime
# the reconstruction is a thresholding of the input at levels the candidates' random starts set.
_NOISE_START = _PAPER.with_(num_candidates=12, iterations=5, num_steps=2)

# The second default: the same, with the latents started at an empty canvas diffused to the chain's start level. The
# chain's first output is then near background everywhere, and the large update thresholds the input near 0.5 (the
# fit-optimal level) instead of at the levels of random strokes. Found by the same sweep.
_BLANK_START = _NOISE_START.with_(latent_init="blank")

PRESETS: dict[str, DefenseSettings] = {
    "paper": _PAPER,
    # The default: the blank start, and the chosen 0/1 reconstruction refined by one more pass of the chain from its
    # diffused self (2 more U-Net evaluations, 122 per input), which gives back soft strokes and smooths pixels an
    # attack flipped across 0.5. Found by the same sweep; measured on the test images in docs/evaluation.md.
    "default": _BLANK_START.with_(refine=True),
    # The earlier defaults, kept for the tables measured with them (docs/results/*blank_start*, *noise_start*).
    "blank-start": _BLANK_START,
    "noise-start": _NOISE_START,
}
