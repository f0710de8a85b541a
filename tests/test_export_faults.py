"""A disk that fills up while a bundle is exported (issue 7): no bundle appears at the target, the temporary folder
is removed, and a bundle already at the target is left as it was. The models, the ONNX writers and the parity
checks are stand-ins, so only export_bundle's own file handling runs (no torch export, a second or so)."""

import errno
import os
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="export needs the [train] extras")
import diffdefense.export.bundle as export_module  # noqa: E402
from diffdefense.schedule import NoiseSchedule  # noqa: E402

STAGES = ["unet graph", "classifier graph", "unet_vjp graph", "manifest", "final rename"]


def disk_full(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.fixture
def stand_ins(monkeypatch):
    """export_bundle with tiny stand-ins; fail_at(stage) makes that stage write half its bytes and hit ENOSPC."""
    failing = {"stage": None}

    def writer(stage: str):
        def write(model, path: Path) -> None:
            if failing["stage"] == stage:
                path.write_bytes(b"\x08\x0a" * 100)  # the start of a graph, then the disk is full
                raise disk_full(path)
            path.write_bytes(f"graph {stage}".encode())

        return write

    real_write_manifest, real_replace = export_module._write_manifest, os.replace

    def write_manifest(folder: Path, manifest: dict) -> None:
        if failing["stage"] == "manifest":
            (folder / "manifest.json").write_text('{"format_version": 1, "fi')
            raise disk_full(folder / "manifest.json")
        real_write_manifest(folder, manifest)

    def replace(src, dst, *args, **kwargs):
        if failing["stage"] == "final rename" and ".tmp-" in Path(src).name:
            raise disk_full(dst)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(export_module, "load_unet", lambda dataset, name: (object(), NoiseSchedule.linear()))
    monkeypatch.setattr(export_module, "fold_batchnorm", lambda unet: unet)
    monkeypatch.setattr(export_module, "load_classifier", lambda dataset, arch: object())
    monkeypatch.setattr(export_module, "source_checksums", lambda dataset, name: {"unet": "test", "model_a": "test"})
    monkeypatch.setattr(export_module, "parity_inputs", lambda *args: {"unet": {}, "unet_vjp": {}, "classifier": {}})
    monkeypatch.setattr(export_module, "export_unet", writer("unet graph"))
    monkeypatch.setattr(export_module, "export_classifier", writer("classifier graph"))
    monkeypatch.setattr(export_module, "export_unet_vjp", writer("unet_vjp graph"))
    monkeypatch.setattr(export_module, "_write_manifest", write_manifest)
    monkeypatch.setattr(export_module.os, "replace", replace)
    return failing


def export(target: Path) -> Path:
    return export_module.export_bundle("mnist", target, calibration_images=0, unet_name="unet", folded=False)


def test_the_stand_ins_export_a_whole_bundle(stand_ins, tmp_path):
    """The control: with the disk not full, the same stand-ins give a bundle with every file and a manifest."""
    target = export(tmp_path / "bundle")
    assert sorted(p.name for p in target.iterdir()) == [
        "classifier.onnx",
        "manifest.json",
        "unet.onnx",
        "unet_vjp.onnx",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


@pytest.mark.parametrize("existing", [False, True], ids=["empty target", "bundle at the target"])
@pytest.mark.parametrize("stage", STAGES)
def test_a_full_disk_leaves_no_half_bundle_and_the_old_one_intact(stand_ins, tmp_path, stage, existing):
    target = tmp_path / "bundle"
    before = {}
    if existing:
        export(target)
        before = {p.name: p.read_bytes() for p in target.iterdir()}
    stand_ins["stage"] = stage
    with pytest.raises(OSError) as failure:
        export(target)
    assert failure.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == (["bundle"] if existing else [])  # no .tmp-, no .old-
    if existing:
        assert {p.name: p.read_bytes() for p in target.iterdir()} == before
