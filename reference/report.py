"""Writing an evaluation as a report folder: results.json, report.md (laid out like the paper's table), PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from diffdefense.reference.intervals import accuracy_interval
from diffdefense.reference.paper_numbers import PAPER_DETECTION_AUROC, PAPER_NO_DEFENSE_ACCURACY, PAPER_ROBUST_ACCURACY


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _auroc(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct_or_dash(value: float | None) -> str:
    return "-" if value is None else _pct(value)


def _interval(accuracy: float, images: int) -> str:
    low, high = accuracy_interval(accuracy, images)
    return f"{_pct(low)}-{_pct(high)}"


def _refining_pass(settings: dict) -> str:
    """The settings line's words for the refining pass (from its own start index where one is set)."""
    if not settings.get("refine"):
        return ""
    level = settings.get("refine_start_step")
    return ", the chosen image refined by one more pass of the chain" + (
        f" from index {level}" if level is not None else ""
    )


def markdown_table(record: dict) -> str:
    r = record["results"]
    s = record["settings"]
    lines = [
        f"# DiffDefense evaluation: {record['dataset']}, preset `{record['preset']}`",
        "",
        f"Data: {record['data']}. Settings: L = {s['iterations']}, R = {s['num_candidates']}, T* = {s['num_steps']} "
        f"(start index {s['start_step']}, eta {s['eta']}), gradient {s['gradient']}, output {s['output_map']}"
        f"{', latents started ' + repr(s['latent_init']) if 'latent_init' in s else ''}"
        f"{_refining_pass(s)}: "
        f"{record['unet_evaluations_per_input']} U-Net image evaluations per input. Seed {record['seed']}.",
        "",
        f"Clean accuracy of Model A: {_pct(r['clean']['accuracy_no_defense'])} % without the defence, "
        f"{_pct(r['clean']['accuracy_defended'])} % with it"
        + (
            f", {_pct(r['clean']['accuracy_binarized'])} % after thresholding at 0.5 (no diffusion)."
            if "accuracy_binarized" in r["clean"]
            else "."
        )
        + (
            f" Model B on the defence's output: {_pct(r['clean']['accuracy_defended_model_b'])} %."
            if "accuracy_defended_model_b" in r["clean"]
            else ""
        ),
        "",
    ]
    paper = record["dataset"] == "mnist"
    images = len(record["indices"])
    for setting, title in (
        ("white_box", "White box (attacks built on Model A)"),
        ("black_box", "Black box (transferred from Model B)"),
    ):
        if not r.get(setting):
            continue
        head = (
            "| attack | no defence | DiffDefense | DiffDefense 95 % CI | threshold 0.5 | Model B on the output "
            "| detection AUROC | detected at 5 % clean FPR | AUROC, refined L1 | detected, refined L1 |"
        )
        rule = "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        if paper and setting == "white_box":
            head += " paper: no defence | paper: DiffDefense | paper: AUROC |"
            rule += " --- | --- | --- |"
        lines += [f"## {title}", "", "Accuracy of Model A in %.", "", head, rule]
        for attack, v in r[setting].items():
            thresholded = _pct(v["accuracy_binarized"]) if "accuracy_binarized" in v else "-"
            row = (
                f"| {attack} | {_pct(v['accuracy_no_defense'])} | {_pct(v['accuracy_defended'])} | "
                f"{_interval(v['accuracy_defended'], images)} | {thresholded} | "
                f"{_pct_or_dash(v.get('accuracy_defended_model_b'))} | "
                f"{v['detection_auroc']:.3f} | {_pct(v['detection_rate_at_5pct_fpr'])} | "
                f"{_auroc(v.get('detection_auroc_refined_l1'))} | "
                f"{_pct_or_dash(v.get('detection_rate_at_5pct_fpr_refined_l1'))} |"
            )
            if paper and setting == "white_box":
                row += (
                    f" {PAPER_NO_DEFENSE_ACCURACY.get(attack, '-')} | {PAPER_ROBUST_ACCURACY.get(attack, '-')} | "
                    f"{PAPER_DETECTION_AUROC.get(attack, '-')} |"
                )
            lines.append(row)
        lines.append("")
    if r.get("adaptive"):
        lines += [
            "## Adaptive attacks (built through the defence)",
            "",
            "Accuracy of Model A after the defence in %, on the first images of the same subset. BPDA: PGD with the "
            "defence's gradient taken as the identity. True gradient: PGD through the whole unrolled optimisation "
            "(the U-Net included), averaged over EOT draws of the defence's randomness.",
            "",
            "| attack | images | eps | step | steps | EOT draws | no defence | DiffDefense | DiffDefense 95 % CI |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, v in r["adaptive"].items():
            b = v["budget"]
            lines.append(
                f"| {name} | {v['images']} | {b['eps']} | {b['alpha']:.4f} | {b['steps']} | {b['eot_iter']} | "
                f"{_pct(v['accuracy_no_defense'])} | {_pct(v['accuracy_defended'])} | "
                f"{_interval(v['accuracy_defended'], v['images'])} |"
            )
        lines.append("")
    lines += [
        "Paper numbers: DESIGN section 1 (read off the official repository's figure, +-0.5 point).",
        "Threshold 0.5: Model A on the attacked images with every pixel thresholded at 0.5, no diffusion at all: "
        "the baseline any purifier of MNIST against L-inf attacks should be read against.",
        "Model B on the output: the other classifier on the same reconstructions; where it reads far more of them "
        "right than Model A, what survives the defence is the perturbation made for the attacked model, not a lost "
        "character (a dash where results.json predates it).",
        "95 % CI: the Wilson score interval of the defended accuracy as a proportion of the images evaluated (scipy): "
        "the sampling error of this subset alone; differences inside it are not resolved by this many images.",
        "Detection AUROC: by the best candidate's error (the paper's score); refined L1: by the mean absolute "
        "difference between the defence's output and its input, the runtime's score (a dash where results.json "
        "predates it).",
        "Every number above is in results.json with the sample indices, settings and versions (the intervals are "
        "computed from it).",
        "",
    ]
    return "\n".join(lines)


def plot_roc(curves: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for tag, (fpr, tpr) in curves.items():
        if tag.startswith("white_box_"):
            ax.plot(fpr, tpr, label=tag.removeprefix("white_box_"))
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate (clean)", ylabel="true positive rate (attacked)", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_examples(examples: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(examples)
    n = len(examples["input"])
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 0.95), squeeze=False)
    for i, name in enumerate(rows):
        for j in range(n):
            ax = axes[i, j]
            ax.imshow(examples[name][j, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(evaluation: dict, out_dir: Path) -> Path:
    record = evaluation["record"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown_table(record))
    plot_roc(evaluation["curves"], out_dir / "roc.png", f"{record['dataset']}: detection by reconstruction error")
    plot_examples(evaluation["examples"], out_dir / "examples.png")
    return out_dir / "report.md"


def rewrite_markdown(out_dir: Path) -> Path:
    """report.md again from the folder's results.json alone (no attack or defence is rerun), for a report made
    before the table's layout last changed."""
    results, report = Path(out_dir) / "results.json", Path(out_dir) / "report.md"
    if not results.is_file():
        raise ValueError(f"Expected a report folder holding results.json, but {results} does not exist.")
    try:
        record = json.loads(results.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"Expected {results} to hold JSON, but it does not: {err}.") from err
    report.write_text(markdown_table(record))
    return report
