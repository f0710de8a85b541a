"""Training the Defense-GAN generator with WGAN-GP (Gulrajani et al. 2017, arXiv 1704.00028), resumable.

Each critic step sees one batch of training images; after every ``critic_steps`` of them the generator takes one
step. The noise and the penalty's interpolation weights come from a generator seeded by (seed, epoch), like the
batch order, so a run resumed after an epoch is bit for bit an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from diffdefense.data import load_dataset
from diffdefense.training.checkpoint import (
    check_same_config,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from diffdefense.training.common import WallClock, command_line, epoch_batches, seed_everything
from diffdefense.training.configs import WGANConfig
from diffdefense.training.models.gan import Critic, Generator
from diffdefense.training.quality import save_grid
from diffdefense.training.shipping import ship

SHIPPED_NAME = "generator"


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """E[(||grad_x critic(x)|| - 1)^2] at random points x between real and generated images (WGAN-GP, eq. 3)."""
    between = (real + weights * (fake - real)).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(between).sum(), between, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def generator_metadata(config: WGANConfig) -> dict[str, str]:
    return {
        "arch": "wgan_generator",
        "dataset": config.dataset,
        "latent_dim": str(config.latent_dim),
        "width": str(config.width),
        "output_range": "[0, 1]",
    }


def train_wgan(config: WGANConfig, out_dir: Path, data_root: Path | None = None, do_ship: bool = True) -> dict:
    seed_everything(config.seed)
    train_set = load_dataset(config.dataset, "train", data_root)
    train_x = train_set.as_tensors()[0]
    generator, critic = Generator(config.latent_dim, config.width), Critic(config.width)
    betas = (0.5, 0.9)
    g_opt = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas)
    c_opt = torch.optim.Adam(critic.parameters(), lr=config.lr, betas=betas)
    fixed_noise = torch.randn(64, config.latent_dim, generator=torch.Generator().manual_seed(config.seed))
    start_epoch, g_steps, history, clock = 0, 0, [], WallClock()

    if (state := load_checkpoint(out_dir)) is not None:
        check_same_config(out_dir, state["config"], asdict(config))
        generator.load_state_dict(state["generator"])
        critic.load_state_dict(state["critic"])
        g_opt.load_state_dict(state["generator_optimizer"])
        c_opt.load_state_dict(state["critic_optimizer"])
        restore_rng_state(state["rng"])
        start_epoch, g_steps, history = state["epoch"], state["generator_steps"], state["history"]
        clock = WallClock(state["wall_seconds"])
        print(f"Resuming {out_dir} after epoch {start_epoch}.")

    for epoch in range(start_epoch, config.epochs):
        generator.train()
        noise = torch.Generator().manual_seed(config.seed * 100_003 + epoch + 13)
        batches = epoch_batches(len(train_x), config.batch_size, config.seed, epoch)
        sums = {"wasserstein": 0.0, "penalty": 0.0, "generator_loss": 0.0}
        bar = tqdm(batches, desc=f"{config.dataset} wgan epoch {epoch + 1}/{config.epochs}", leave=False, disable=None)
        for i, idx in enumerate(bar):
            real = train_x[idx]
            with torch.no_grad():
                fake = generator(torch.randn(len(idx), config.latent_dim, generator=noise))
            weights = torch.rand(len(idx), 1, 1, 1, generator=noise)
            wasserstein = critic(real).mean() - critic(fake).mean()
            penalty = gradient_penalty(critic, real, fake, weights)
            c_opt.zero_grad(set_to_none=True)
            (config.gradient_penalty * penalty - wasserstein).backward()
            c_opt.step()
            sums["wasserstein"] += wasserstein.item()
            sums["penalty"] += penalty.item()
            if (i + 1) % config.critic_steps == 0:
                g_loss = -critic(generator(torch.randn(config.batch_size, config.latent_dim, generator=noise))).mean()
                g_opt.zero_grad(set_to_none=True)
                g_loss.backward()
                g_opt.step()
                g_steps += 1
                sums["generator_loss"] += g_loss.item()
                bar.set_postfix(w=f"{wasserstein.item():.3f}")
        steps_this_epoch = max(1, len(batches) // config.critic_steps)
        history.append(
            {
                "epoch": epoch + 1,
                "generator_steps": g_steps,
                "mean_wasserstein_estimate": sums["wasserstein"] / len(batches),
                "mean_gradient_penalty": sums["penalty"] / len(batches),
                "mean_generator_loss": sums["generator_loss"] / steps_this_epoch,
                "wall_seconds": round(clock.seconds, 1),
            }
        )
        print(
            f"epoch {epoch + 1}: Wasserstein estimate {history[-1]['mean_wasserstein_estimate']:.4f}, "
            f"{g_steps} generator steps, {clock.seconds:.0f} s",
            flush=True,
        )
        generator.eval()
        with torch.no_grad():
            save_grid(generator(fixed_noise).numpy(), out_dir / f"samples_epoch_{epoch + 1}.png")
        save_checkpoint(
            out_dir,
            {
                "config": asdict(config),
                "epoch": epoch + 1,
                "generator_steps": g_steps,
                "generator": generator.state_dict(),
                "critic": critic.state_dict(),
                "generator_optimizer": g_opt.state_dict(),
                "critic_optimizer": c_opt.state_dict(),
                "rng": rng_state(),
                "history": history,
                "wall_seconds": clock.seconds,
            },
        )

    record = {
        "model": "WGAN-GP generator (Defense-GAN baseline)",
        "command": command_line(),
        "config": asdict(config),
        "data": f"{train_set.name} ({len(train_x)} images)",
        "epochs": config.epochs,
        "generator_steps": g_steps,
        "torch_threads": torch.get_num_threads(),
        "wall_seconds": round(clock.seconds, 1),
        "final_metrics": {"mean_wasserstein_estimate_last_epoch": history[-1]["mean_wasserstein_estimate"]},
        "history": history,
    }
    if do_ship:
        path = ship(generator.state_dict(), config.dataset, SHIPPED_NAME, record, generator_metadata(config))
        print(f"Shipped {path}")
    return record
