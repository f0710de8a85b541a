"""Make a test video for the streaming command: MNIST test digits as a camera would see them, some attacked.

    python tools/make_video.py --out runs/video/digits.mkv

Each digit is drawn as dark ink on lit paper (so the stream needs --invert), 3x nearest-neighbour upscaled into an
84 x 84 region of interest, held for --frames-per-digit frames while it shakes by a few pixels, under lighting that
drifts in brightness and slope, with Gaussian sensor noise (simulated_camera.render_frame). Every
--attack-every-th digit is replaced by its white-box PGD adversarial example against the shipped Model A (eps 0.3,
as the paper). The video is lossless (FFV1), so the attacks reach the stream except for the simulated noise.
Beside it, <name>.json records every frame's true label and whether it is attacked, the seed, and the
preprocessing that recovers the digit.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from diffdefense.data import load_dataset
from diffdefense.runtime.stream.frames import import_cv2
from diffdefense.runtime.stream.simulated_camera import FRAME_SIZE, FRAMES_PER_DIGIT, PREPROCESSING, ROI, render_frame


def attacked_digits(digits: int, attack_every: int, seed: int, rng: np.random.Generator):
    """Draw `digits` MNIST test digits and attack every attack_every-th: (test indices, labels, attacked flags,
    the digits shown as (N, 28, 28) in [0, 1])."""
    import torch

    from diffdefense.reference.attacks import run_attack
    from diffdefense.training.loading import load_classifier

    test = load_dataset("mnist", "test")
    indices = rng.choice(len(test), digits, replace=False)
    images, labels = test.subset(indices).as_tensors()
    attacked = np.arange(digits) % attack_every == attack_every - 1 if attack_every else np.zeros(digits, dtype=bool)
    shown = images.clone()
    if attacked.any():
        mask = torch.from_numpy(attacked)
        shown[mask] = run_attack("PGD", load_classifier("mnist", "model_a"), images[mask], labels[mask], seed=seed)
    return indices, labels, attacked, shown.numpy()[:, 0]


@click.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Video path (.mkv).")
@click.option("--digits", type=click.IntRange(min=1), default=24, show_default=True)
@click.option("--frames-per-digit", type=click.IntRange(min=1), default=FRAMES_PER_DIGIT, show_default=True)
@click.option("--attack-every", type=click.IntRange(min=0), default=3, show_default=True, help="0: none.")
@click.option("--noise-std", type=float, default=4.0, show_default=True, help="Sensor noise, in 0..255 levels.")
@click.option("--fps", type=float, default=30.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def main(out: Path, digits: int, frames_per_digit: int, attack_every: int, noise_std: float, fps: float, seed: int):
    cv2 = import_cv2()
    rng = np.random.default_rng(seed)
    indices, labels, attacked, shown = attacked_digits(digits, attack_every, seed, rng)

    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"FFV1"), fps, FRAME_SIZE)
    if not writer.isOpened():
        raise click.ClickException(f"OpenCV cannot write an FFV1 video at {out}; use a .mkv or .avi name.")
    frames = []
    for d in range(digits):
        for _ in range(frames_per_digit):
            writer.write(render_frame(shown[d], len(frames), rng, noise_std))
            frames.append({"label": int(labels[d]), "attacked": bool(attacked[d]), "digit": d})
    writer.release()
    truth = {
        "video": out.name,
        "fps": fps,
        "frames": frames,
        "test_indices": indices.tolist(),
        "preprocessing": {**PREPROCESSING, "roi": list(ROI)},
        "attack": "white-box PGD against the shipped MNIST Model A, eps 0.3 (diffdefense.reference.attacks)",
        "command": f"python tools/make_video.py --out {out} --digits {digits} --frames-per-digit {frames_per_digit} "
        f"--attack-every {attack_every} --noise-std {noise_std} --fps {fps} --seed {seed}",
    }
    out.with_suffix(".json").write_text(json.dumps(truth, indent=1))
    click.echo(f"Wrote {len(frames)} frames ({int(attacked.sum())} of {digits} digits attacked) to {out}.")
