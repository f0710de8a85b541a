"""Training Model A or Model B with Adam and cross-entropy, one checkpoint per epoch, resumable."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm import tqdm

from diffdefense.data import load_dataset, load_training_set
from diffdefense.training.augment import random_affine
from diffdefense.training.checkpoint import (
    check_same_config,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from diffdefense.training.common import WallClock, command_line, epoch_batches, seed_everything
from diffdefense.training.configs import ClassifierConfig
from diffdefense.training.models.classifiers import CLASSIFIERS
from diffdefense.training.shipping import ship


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = sum(
        (model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum().item()
        for i in range(0, len(labels), batch_size)
    )
    return correct / len(labels)


def train_classifier(
    config: ClassifierConfig, out_dir: Path, data_root: Path | None = None, do_ship: bool = True
) -> dict:
    seed_everything(config.seed)
    train_set = load_training_set(config.dataset, data_root, config.extra_train)
    train_x, train_y = train_set.as_tensors()
    test_set = load_dataset(config.dataset, "test", data_root)
    test_x, test_y = test_set.as_tensors()
    model = CLASSIFIERS[config.arch]()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    start_epoch, history, clock = 0, [], WallClock()

    if (state := load_checkpoint(out_dir)) is not None:
        check_same_config(out_dir, state["config"], asdict(config))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"])
        start_epoch, history, clock = state["epoch"], state["history"], WallClock(state["wall_seconds"])
        print(f"Resuming {out_dir} after epoch {start_epoch}.")

    for epoch in range(start_epoch, config.epochs):
        model.train()
        # Seeded per epoch, like the batch order, so that a resumed run jitters the same way.
        augmenter = torch.Generator().manual_seed(config.seed * 100_003 + epoch + 7)
        batches = epoch_batches(len(train_y), config.batch_size, config.seed, epoch)
        bar = tqdm(
            batches, desc=f"{config.dataset} {config.arch} epoch {epoch + 1}/{config.epochs}", leave=False, disable=None
        )
        for idx in bar:
            x = train_x[idx]
            if config.augment:
                x = random_affine(x, augmenter)
            loss = F.cross_entropy(model(x), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        scheduler.step()
        test_acc = accuracy(model, test_x, test_y)
        history.append({"epoch": epoch + 1, "last_loss": loss.item(), "test_accuracy": test_acc})
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}, {test_set.name} accuracy {test_acc:.4f}", flush=True)
        save_checkpoint(
            out_dir,
            {
                "config": asdict(config),
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "history": history,
                "wall_seconds": clock.seconds,
            },
        )

    record = {
        "model": config.arch,
        "command": command_line(),
        "config": asdict(config),
        "data": {
            "train": f"{train_set.name} ({len(train_y)} images)",
            "test": f"{test_set.name} ({len(test_y)} images)",
        },
        "epochs": config.epochs,
        "wall_seconds": round(clock.seconds, 1),
        "final_metrics": {"test_accuracy": history[-1]["test_accuracy"]},
        "history": history,
    }
    if do_ship:
        path = ship(
            model.state_dict(),
            config.dataset,
            config.arch,
            record,
            {"arch": config.arch, "dataset": config.dataset, "input_range": "[0, 1]"},
        )
        print(f"Shipped {path}")
    return record
