"""reference/side_by_side.py: timing in turns and the record that tools/speedup_table.py reads."""

import pytest

from diffdefense.reference.side_by_side import (
    BATCH,
    REFERENCE_VARIANTS,
    RUNTIME_VARIANTS,
    benchmark_record,
    main,
    time_in_turns,
)
from diffdefense.speedup import speedup_rows


def test_contenders_take_turns_within_every_round_after_the_warmup():
    calls = []
    seconds = time_in_turns({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b"] * 4  # one untimed round, then three timed ones, a and b alternating
    assert {name: len(s) for name, s in seconds.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for s in seconds.values() for t in s)


def test_records_give_ms_per_image_from_the_median_round_and_pair_with_their_references():
    runtime = dict(variant="BatchNorm U-Net, folded timesteps", batch_size=8, unet="unet_bn", unet_evaluations=122)
    runtime["backend"] = "runtime onnxruntime CPU: " + runtime["variant"]
    eager = dict(variant="BatchNorm U-Net, eager", batch_size=8, unet="unet_bn", reference="eager")
    eager["backend"] = "reference PyTorch CPU: " + eager["variant"]
    records = [benchmark_record(runtime, [0.2, 0.1, 0.3]), benchmark_record(eager, [0.6, 0.9, 0.3])]
    assert records[0]["stats"]["median"] == 0.2 and records[0]["stats"]["rounds"] == 3
    assert records[0]["extra_info"]["ms_per_image"] == pytest.approx(200 / BATCH)
    rows = {r["variant"]: r for r in speedup_rows(records)}
    assert rows[runtime["variant"]]["vs_eager"] == pytest.approx(3.0)


def test_every_variant_names_a_known_u_net_and_unknown_variants_are_refused():
    assert {unet for unet, _ in RUNTIME_VARIANTS.values()} >= {unet for unet, _ in REFERENCE_VARIANTS.values()}
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["--variant", "no such variant", "--out", "unused.json"])
    assert result.exit_code == 2 and "no such variant" in result.output
