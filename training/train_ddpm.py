"""Training the DDPM noise predictor (L_simple, Adam, an EMA of the weights that ships), resumable."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diffdefense import shipped
from diffdefense.data import load_training_set
from diffdefense.schedule import NoiseSchedule
from diffdefense.training.checkpoint import (
    check_same_config,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from diffdefense.training.common import WallClock, command_line, epoch_batches, seed_everything
from diffdefense.training.configs import DDPMConfig
from diffdefense.training.ddpm import diffusion_loss, distillation_loss, random_noising, to_model_range
from diffdefense.training.loading import load_unet
from diffdefense.training.models.unet import UNet
from diffdefense.training.shipping import record_file, ship

# The shipped file of each normalisation: the GroupNorm net keeps its historical name.
SHIPPED_NAMES = {"group": "unet", "batch": "unet_bn"}


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """An EMA of the parameters; buffers (BatchNorm's running statistics) are copied, and measured again for the
    averaged weights at the end of training by recalibrate_batchnorm."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


@torch.no_grad()
def recalibrate_batchnorm(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    train_x: torch.Tensor,
    seed: int,
    batches: int = 100,
    max_timestep: int | None = None,
) -> None:
    """BatchNorm statistics measured for these (EMA) weights: the exact mean over `batches` seeded training batches
    of noised images at random timesteps (t < max_timestep where given), the training distribution. Leaves the model
    in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if not norms:
        return
    generator = torch.Generator().manual_seed(seed)
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    model.train()
    for _ in range(batches):
        batch = train_x[torch.randint(0, len(train_x), (128,), generator=generator)]
        x_t, t, _ = random_noising(schedule, batch, generator, max_timestep)
        model(x_t, t)
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def unet_metadata(config: DDPMConfig) -> dict[str, str]:
    return {
        "arch": "unet",
        "dataset": config.dataset,
        "channels": json.dumps(list(config.channels)),
        "norm": config.norm,
        "activation": config.activation,
        "schedule": json.dumps(
            {
                "kind": "linear",
                "num_steps": config.num_steps,
                "beta_start": config.beta_start,
                "beta_end": config.beta_end,
            }
        ),
        "model_range": "[-1, 1]",
        "prediction": "epsilon",
        # the net was trained on t < trained_timesteps: a defence must start below it (training/loading.py)
        "trained_timesteps": str(config.max_timestep or config.num_steps),
    }


def _initialise_from(run_dir: str, model: torch.nn.Module, ema: torch.nn.Module) -> dict:
    """Start from a finished run's weights and EMA (a new learning-rate schedule; no optimizer state)."""
    state = load_checkpoint(Path(run_dir))
    if state is None:
        raise ValueError(f"Expected a finished run with a checkpoint in {run_dir}, but there is none.")
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    print(f"Starting from {run_dir} (after its epoch {state['epoch']}, step {state['step']}).")
    return {
        "run": str(run_dir),
        "config": state["config"],
        "epochs": state["epoch"],
        "steps": state["step"],
        "wall_seconds": round(state["wall_seconds"], 1),
        "history": state["history"],
    }


def _initialise_from_shipped(config: DDPMConfig, model: torch.nn.Module, ema: torch.nn.Module) -> dict:
    """Start from a shipped U-Net's (EMA) weights, for model and EMA alike; it must have this run's shape."""
    shipped_net, schedule = load_unet(config.dataset, name=config.init_from_shipped)
    _check_same_net(config, shipped_net, schedule, config.init_from_shipped, same_shape=True)
    model.load_state_dict(shipped_net.state_dict())
    ema.load_state_dict(shipped_net.state_dict())
    print(f"Starting from the shipped {config.init_from_shipped}.")
    record = json.loads(shipped.verify_file(record_file(config.dataset, config.init_from_shipped)).read_text())
    return {
        "shipped": config.init_from_shipped,
        "command": record["command"],
        "config": record["config"],
        "epochs": record["epochs"],
        "steps": record.get("steps_in_all", record["steps"]),
        "wall_seconds": record.get("wall_seconds_in_all", record["wall_seconds"]),
        "history": record["history"],
    }


def _check_same_net(config: DDPMConfig, net: UNet, schedule: NoiseSchedule, name: str, same_shape: bool) -> None:
    """A shipped net this run builds on: the same noise schedule, trained on the timesteps this run trains, and
    (to start from it) the same widths and normalisation; the activation may differ (a SiLU net fine-tuned into a ReLU
    one: the activations have no weights)."""
    expected = NoiseSchedule.linear(config.num_steps, config.beta_start, config.beta_end)
    if not np.array_equal(schedule.betas, expected.betas):
        raise ValueError(f"Expected the shipped {name} to have this run's noise schedule, but it has another.")
    wanted = config.max_timestep or config.num_steps
    if net.trained_timesteps < wanted:
        raise ValueError(
            f"Expected the shipped {name} to be trained on t < {wanted} at least, but it was trained on "
            f"t < {net.trained_timesteps}."
        )
    if same_shape and (tuple(net.channels) != tuple(config.channels) or net.norm != config.norm):
        raise ValueError(
            f"Expected the shipped {name} to have channels {tuple(config.channels)} and norm {config.norm!r}, but it "
            f"has {tuple(net.channels)} and {net.norm!r}."
        )


def _teacher(config: DDPMConfig) -> UNet:
    teacher, schedule = load_unet(config.dataset, name=config.distill_from)
    _check_same_net(config, teacher, schedule, config.distill_from, same_shape=False)
    return teacher.requires_grad_(False)


def train_ddpm(
    config: DDPMConfig, out_dir: Path, data_root: Path | None = None, do_ship: bool = True, ship_as: str | None = None
) -> dict:
    """ship_as: the shipped name (default by normalisation: 'unet' or 'unet_bn'), e.g. 'unet_bn_small' for a
    narrower deployment net beside the default one."""
    if config.max_timestep is not None and not 1 <= config.max_timestep <= config.num_steps:
        raise ValueError(f"Expected max_timestep in [1, {config.num_steps}], but got {config.max_timestep}.")
    if config.init_from and config.init_from_shipped:
        raise ValueError("Expected one of init_from (a run folder) and init_from_shipped (a shipped U-Net), not both.")
    seed_everything(config.seed)
    train_set = load_training_set(config.dataset, data_root, config.extra_train)
    train_x = to_model_range(train_set.as_tensors()[0])
    schedule = NoiseSchedule.linear(config.num_steps, config.beta_start, config.beta_end)
    model = UNet(config.channels, norm=config.norm, activation=config.activation)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    total_steps = config.epochs * -(-len(train_x) // config.batch_size)
    # Linear warm-up, then cosine decay to a tenth of the peak rate.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            min(1.0, (step + 1) / config.warmup_steps)
            * (0.55 + 0.45 * torch.cos(torch.tensor(step / total_steps * torch.pi)).item())
        ),
    )
    start_epoch, step, history, clock = 0, 0, [], WallClock()
    earlier = None
    if config.init_from:
        earlier = _initialise_from(config.init_from, model, ema)
    elif config.init_from_shipped:
        earlier = _initialise_from_shipped(config, model, ema)
    teacher = _teacher(config) if config.distill_from else None

    if (state := load_checkpoint(out_dir)) is not None:
        saved = {**state["config"], "channels": tuple(state["config"]["channels"])}
        saved.setdefault("norm", "group")  # runs from before the choice of normalisation
        saved.setdefault("max_timestep", None)  # runs from before the choice of timesteps
        saved.setdefault("init_from_shipped", None)  # runs from before distillation
        saved.setdefault("distill_from", None)
        saved.setdefault("activation", "silu")  # runs from before the choice of activation
        check_same_config(out_dir, saved, asdict(config))
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"])
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
        clock = WallClock(state["wall_seconds"])
        print(f"Resuming {out_dir} after epoch {start_epoch}.")

    for epoch in range(start_epoch, config.epochs):
        model.train()
        running = 0.0
        batches = epoch_batches(len(train_x), config.batch_size, config.seed, epoch)
        bar = tqdm(batches, desc=f"{config.dataset} ddpm epoch {epoch + 1}/{config.epochs}", leave=False, disable=None)
        for idx in bar:
            if teacher is None:
                loss = diffusion_loss(model, schedule, train_x[idx], max_timestep=config.max_timestep)
            else:
                loss = distillation_loss(model, teacher, schedule, train_x[idx], max_timestep=config.max_timestep)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            # EMA warm-up (as in many DDPM codebases) so that short runs are not dominated by the init.
            update_ema(ema, model, min(config.ema_decay, (1 + step) / (10 + step)))
            running += loss.item()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        history.append({"epoch": epoch + 1, "step": step, "mean_loss": running / len(batches)})
        print(
            f"epoch {epoch + 1}: mean loss {running / len(batches):.4f} ({step} steps, {clock.seconds:.0f} s)",
            flush=True,
        )
        save_checkpoint(
            out_dir,
            {
                "config": {**asdict(config), "channels": list(config.channels)},
                "epoch": epoch + 1,
                "step": step,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "history": history,
                "wall_seconds": clock.seconds,
            },
        )

    recalibrate_batchnorm(ema, schedule, train_x, config.seed, max_timestep=config.max_timestep)
    name = ship_as or SHIPPED_NAMES[config.norm]
    record = {
        "model": f"{name} (EMA weights)",
        "command": command_line(),
        "config": asdict(config),
        "data": f"{train_set.name} ({len(train_x)} images)",
        "epochs": config.epochs,
        "steps": step,
        "wall_seconds": round(clock.seconds, 1),
        "final_metrics": {"mean_loss_last_epoch": history[-1]["mean_loss"]},
        "history": history,
    }
    if config.distill_from:
        record["distilled_from"] = config.distill_from
    if earlier:
        record["initialised_from"] = earlier
        record["steps_in_all"] = step + earlier["steps"]
        record["wall_seconds_in_all"] = round(clock.seconds + earlier["wall_seconds"], 1)
    if do_ship:
        path = ship(ema.state_dict(), config.dataset, name, record, unet_metadata(config))
        print(f"Shipped {path}")
    return record
