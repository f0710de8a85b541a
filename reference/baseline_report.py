"""The side-by-side table of a baseline run (reference/baseline_evaluation.py) as Markdown."""

from __future__ import annotations


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown_report(record: dict, command: str) -> str:
    """One row per image set (clean, then each attack); per defence its accuracy in %, the 95 % interval, the
    detection AUROC against its own clean scores, and its wall time per image."""
    names = list(record["defenses"])
    header = ["set", "no defence"]
    for name in names:
        header += [f"**{name}**", "95 % interval", "AUROC", "s / image"]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for set_name, row in record["results"].items():
        # An adaptive set differs per defence: its undefended accuracy is in results.json, per defence.
        cells = [set_name, _percent(row["no_defense"]["accuracy"]) if row["no_defense"] else ""]
        for name in names:
            entry = row["defenses"][name]
            low, high = entry["interval_95"]
            auroc = f"{entry['detection_auroc']:.3f}" if "detection_auroc" in entry else ""
            cells += [f"**{_percent(entry['accuracy'])}**", f"{_percent(low)}-{_percent(high)}", auroc]
            cells.append(f"{entry['seconds_per_image']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(
        [
            f"# Defences side by side: {record['dataset']}",
            "",
            f"Data: {record['data']}. Attacks (white-box, on Model A alone): "
            + ", ".join(f"{a} {s}" for a, s in record["attacks"].items())
            + ".",
            "",
            "Made by",
            "",
            f"    {command}",
            "",
            "Accuracy of Model A in %. AUROC: the defence's reconstruction error as the detection score, attacked "
            "against clean images. s / image: wall time of the defence per image, in chunks of "
            f"{record['chunk']} images on {record['torch_threads']} torch thread(s), measured when each chunk was "
            "computed.",
            "",
            *lines,
            "",
            "Settings: " + "; ".join(f"`{n}` {d['settings']}" for n, d in record["defenses"].items()),
            "",
        ]
    )
