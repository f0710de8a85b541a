"""Long runs and load: a short soak through the whole streaming path with its memory bound, and
several threads streaming at once, each through its own Defender or all through one. (Threads sharing one
Defender on plain batches: tests/test_determinism.py.)

The full soak, 20,000 frames: nice -n 10 python tools/soak.py --frames 20000 --out docs/results/soak_20000.json
"""

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2", reason="OpenCV (the [video] extra) is not installed")

from diffdefense.runtime.defender import Defender  # noqa: E402
from diffdefense.runtime.stream import FrameReader, defend_stream, simulated_camera  # noqa: E402
from diffdefense.runtime.stream.frames import FramePreprocessor  # noqa: E402
from diffdefense.runtime.stream.soak import soak  # noqa: E402
from diffdefense.runtime.stream.warm_start import WarmStart  # noqa: E402
from diffdefense.settings import PRESETS  # noqa: E402
from diffdefense.shipped import bundle_dir  # noqa: E402

SOAK = Path(__file__).resolve().parents[1] / "tools" / "soak.py"
CHEAP = PRESETS["default"].with_(num_candidates=2, iterations=2)
FIELDS = ("index", "label", "probability", "reconstruction_error", "warm")


def test_a_short_soak_stays_within_its_memory_bound(tmp_path):
    """1,500 frames (200 of warm-up) with the annotated video: the RSS after the warm-up grows by at most 20 MiB,
    every frame is answered and written, and the first frame answers the same after all the others."""
    out = tmp_path / "soak.json"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(SOAK), "--frames", "1500", "--interval", "100", "--annotate", str(tmp_path / "a.avi")]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads(out.read_text())
    assert record["ok"] and record["frames"] == 1500 and record["dropped"] == 0
    assert record["growth_mb"] <= record["max_growth_mb"] == 20.0
    assert record["first_frame_same_after_soak"] and record["annotated_video"]["frames"] == 1500
    assert len(record["samples"]) == 1 + 1300 // 100 and wall < 60, wall


def test_the_soak_fails_when_memory_grows_past_its_bound(monkeypatch):
    """The bound is enforced: a real leak of 1 MiB a frame (made here, in the camera) fails a bound of 20 MiB."""
    import mmap

    leak, render = [], simulated_camera.render_frame

    def leaking_render(*args):
        # fresh pages from the kernel, written: memory that earlier tests freed (and malloc kept) cannot absorb it
        pages = mmap.mmap(-1, 1 << 20)
        pages.write(b"\x01" * (1 << 20))
        leak.append(pages)
        return render(*args)

    monkeypatch.setattr(simulated_camera, "render_frame", leaking_render)
    record = soak(frames=60, warmup=10, interval=10, max_growth_mb=20.0, candidates=1, iterations=1, warm_iterations=1)
    assert not record["ok"] and record["growth_mb"] > 40.0


def stream_frames(defender: Defender, frames: int, seed: int, warm: bool) -> list[tuple]:
    """One synthetic camera streamed through defend_stream; the fields of every answer."""
    camera = simulated_camera.SyntheticCamera(frames, seed=seed)
    steps = FramePreprocessor(**simulated_camera.PREPROCESSING)
    with FrameReader(camera, queue_size=2, drop_oldest=False, read_timeout=30.0) as reader:
        results = defend_stream(defender, reader, steps, WarmStart(iterations=1) if warm else None)
        return [tuple(getattr(r, f) for f in FIELDS) + (r.reconstruction.tobytes(),) for r in results]


@pytest.mark.parametrize("shared", [False, True], ids=["own-defender-each", "one-shared-defender"])
def test_threads_streaming_at_once_answer_as_one_thread_alone(shared):
    """Three cameras (different seeds, so different frames), each streamed on its own thread with warm start:
    every answer, bit for bit, as when each is streamed alone. A shared Defender keeps no state between calls
    (each stream's warm start is its own)."""
    seeds, frames = (0, 1, 2), 40
    one = Defender(bundle_dir("mnist"), CHEAP)
    defenders = [one] * 3 if shared else [Defender(bundle_dir("mnist"), CHEAP) for _ in seeds]
    alone = [stream_frames(one, frames, seed, warm=True) for seed in seeds]
    assert len({tuple(a) for a in alone}) == 3  # the cameras differ, so a mix-up would show
    with ThreadPoolExecutor(max_workers=3) as pool:
        together = list(pool.map(lambda k: stream_frames(defenders[k], frames, seeds[k], warm=True), range(3)))
    for k, (a, b) in enumerate(zip(alone, together, strict=True)):
        assert len(b) == frames and a == b, f"camera {k} answered differently on a thread"
    assert all(np.isfinite(r[3]) for stream in together for r in stream)
