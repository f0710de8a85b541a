"""Streaming: the frame queue, the reader thread (real and fake sources), warm start, the annotated video, and
the stream command. Every failure ends in an error or a clean end of stream, never a hang."""

import json
import threading
import time

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV (the [video] extra) is not installed")

from click.testing import CliRunner  # noqa: E402

from diffdefense.cli import main  # noqa: E402
from diffdefense.detection_threshold import clean_threshold  # noqa: E402
from diffdefense.runtime.defender import Defender  # noqa: E402
from diffdefense.runtime.stream import FrameReader, StreamError, defend_stream  # noqa: E402
from diffdefense.runtime.stream import reader as reader_module  # noqa: E402
from diffdefense.runtime.stream.annotate import AnnotatedVideoWriter  # noqa: E402
from diffdefense.runtime.stream.frame_queue import FrameQueue, QueueClosed  # noqa: E402
from diffdefense.runtime.stream.frames import FramePreprocessor  # noqa: E402
from diffdefense.runtime.stream.summary import FrameLog, format_summary, summarize  # noqa: E402
from diffdefense.runtime.stream.warm_start import WarmStart  # noqa: E402
from diffdefense.settings import PRESETS  # noqa: E402
from diffdefense.shipped import SAMPLES_DIR, bundle_dir  # noqa: E402

FAST = PRESETS["default"].with_(num_candidates=2, iterations=2)
FRAMES = 6


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A lossless video of FRAMES frames, each a shipped sample digit (light on dark) at 2x in a 64 x 64 frame,
    and the truth JSON beside it."""
    samples = np.load(SAMPLES_DIR / "mnist.npz")
    path = tmp_path_factory.mktemp("video") / "digits.mkv"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (64, 64))
    assert writer.isOpened()
    for k in range(FRAMES):
        frame = np.zeros((64, 64), np.uint8)
        frame[4:60, 4:60] = np.kron((255 * samples["images"][k // 2, 0]).round().astype(np.uint8), np.ones((2, 2)))
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    frames = [
        {"label": int(samples["labels"][k // 2]), "attacked": bool(samples["attacked"][k // 2])} for k in range(6)
    ]
    path.with_suffix(".json").write_text(json.dumps({"frames": frames}))
    return path


@pytest.fixture(scope="module")
def defender():
    return Defender(bundle_dir("mnist"), FAST)


STEPS = FramePreprocessor(roi=(4, 4, 56, 56))


def test_the_queue_drops_the_oldest_or_waits():
    dropping = FrameQueue(2, drop_oldest=True)
    for k in range(5):
        assert dropping.put(k)
    dropping.close()
    assert [dropping.get(1.0), dropping.get(1.0)] == [3, 4] and dropping.dropped == 3
    with pytest.raises(QueueClosed):
        dropping.get(1.0)

    waiting = FrameQueue(1, drop_oldest=False)
    waiting.put("a")
    threading.Timer(0.1, lambda: waiting.get(1.0)).start()
    started = time.perf_counter()
    assert waiting.put("b")  # blocks until the timer takes "a"
    assert time.perf_counter() - started >= 0.05 and waiting.dropped == 0


def test_an_empty_queue_times_out_and_a_producer_error_reaches_the_consumer():
    queue = FrameQueue(1, drop_oldest=True)
    with pytest.raises(TimeoutError):
        queue.get(0.05)
    queue.close(OSError("camera unplugged"))
    with pytest.raises(OSError, match="unplugged"):
        queue.get(1.0)


def test_a_file_is_read_whole_and_in_order(video):
    with FrameReader(str(video)) as reader:
        items = list(reader)
    assert [index for index, _, _ in items] == list(range(FRAMES))
    assert items[0][1].shape == (64, 64, 3) and reader.dropped == 0 and reader.fps == pytest.approx(10.0)


@pytest.mark.parametrize(
    "source, message",
    [("/no/such/video.mkv", "Expected a video file"), ("5", "could not open the camera"), (__file__, "could not open")],
)
def test_an_unreadable_source_is_refused_at_once(source, message):
    with pytest.raises(StreamError, match=message):
        FrameReader(source)


class FakeCapture:
    """A camera that gives `frames` frames, then either goes away (read fails) or, with stall, blocks."""

    def __init__(self, frames: int, stall: bool = False, fail: bool = False) -> None:
        self.left, self.stall, self.fail, self.released = frames, stall, fail, threading.Event()

    def read(self):
        if self.left == 0:
            if self.fail:
                raise RuntimeError("driver error")
            if self.stall:
                self.released.wait(10)
            return False, None
        self.left -= 1
        return True, np.zeros((28, 28, 3), np.uint8)

    def get(self, prop):
        return 30.0

    def release(self):
        self.released.set()


@pytest.mark.parametrize("stall, fail", [(False, False), (True, False), (False, True)])
def test_a_camera_that_closes_stalls_or_fails_never_hangs(monkeypatch, stall, fail):
    capture = FakeCapture(3, stall=stall, fail=fail)
    monkeypatch.setattr(reader_module, "open_capture", lambda source: (capture, "camera"))
    reader = FrameReader(0, drop_oldest=False, read_timeout=0.3)
    seen = []
    started = time.perf_counter()
    if stall or fail:
        with pytest.raises(StreamError, match="stalled" if stall else "driver error"):
            for item in reader:
                seen.append(item)
    else:
        seen = list(reader)  # a camera that goes away: the stream ends cleanly
    capture.release()
    reader.close()
    assert len(seen) == 3 and time.perf_counter() - started < 5


class StallingCapture:
    """A camera whose read() blocks until woken; counts its releases."""

    def __init__(self) -> None:
        self.wake, self.releases = threading.Event(), 0

    def read(self):
        self.wake.wait(10)
        return False, None

    def get(self, prop):
        raise RuntimeError("this SDK cannot say its frame rate")

    def release(self):
        self.releases += 1


def test_a_camera_stuck_in_read_is_released_once_when_the_read_returns(monkeypatch):
    capture = StallingCapture()
    monkeypatch.setattr(reader_module, "open_capture", lambda source: (capture, "camera"))
    reader = FrameReader(0, read_timeout=0.2)
    assert reader.fps is None  # a wrapper that cannot say its frame rate: unknown, not an error
    reader.close()  # returns after its wait, the reader still blocked in read()
    assert reader.thread.is_alive() and capture.releases == 0
    capture.wake.set()
    reader.thread.join(5)
    assert not reader.thread.is_alive() and capture.releases == 1
    reader.close()
    assert capture.releases == 1


def test_a_live_source_keeps_only_the_newest_frame_waiting_while_the_consumer_is_slow(monkeypatch):
    capture = FakeCapture(50)
    monkeypatch.setattr(reader_module, "open_capture", lambda source: (capture, "camera"))
    with FrameReader(0, queue_size=4) as reader:  # queue_size is for keeping every frame; dropping holds one
        reader.thread.join(5)  # the consumer is busy; the reader runs on to the camera's end, keeping the newest
        seen = [index for index, _, _ in reader]
    assert reader.drop_oldest and reader.queue.capacity == 1 and reader.queue.most_waiting == 1
    assert seen == [49] and reader.dropped == 49


def test_keeping_every_frame_queues_up_to_queue_size_and_drops_none(monkeypatch):
    capture = FakeCapture(50)
    monkeypatch.setattr(reader_module, "open_capture", lambda source: (capture, "camera"))
    with FrameReader(0, queue_size=3, drop_oldest=False) as reader:
        deadline = time.perf_counter() + 5
        while reader.queue.most_waiting < 3 and time.perf_counter() < deadline:  # the reader fills the queue, then
            time.sleep(0.01)  # waits for the consumer
        seen = [index for index, _, _ in reader]
    assert not reader.drop_oldest and reader.queue.capacity == 3 and reader.queue.most_waiting == 3
    assert seen == list(range(50)) and reader.dropped == 0


def test_a_file_is_paced_when_dropping_and_its_frames_are_stamped_at_their_frame_times(video):
    with FrameReader(str(video)) as reader:  # a file by default: every frame, read as fast as decoded
        assert not reader.drop_oldest and not reader.pace and reader.queue.capacity == 2
    with FrameReader(str(video), drop_oldest=True) as reader:  # dropping, a file stands in for a camera
        assert reader.drop_oldest and reader.pace and reader.queue.capacity == 1
    with FrameReader(str(video), drop_oldest=False, pace=True) as reader:
        items = list(reader)
    captured = [stamp - items[0][2] for _, _, stamp in items]
    assert [index for index, _, _ in items] == list(range(FRAMES))
    assert captured == pytest.approx([k / 10.0 for k in range(FRAMES)], abs=1e-9)  # frame k at k / fps, not read time


def test_defend_stream_gives_every_frame_with_stage_timings(video, defender):
    with FrameReader(str(video)) as reader:
        results = list(defend_stream(defender, reader, STEPS, max_frames=4))
    assert [r.index for r in results] == [0, 1, 2, 3]
    for r in results:
        assert {"wait", "preprocess", "defense", "classify", "latency"} <= set(r.timings)
        assert r.label_name == str(r.label) and 0 <= r.probability <= 1 and not r.warm
        assert r.reconstruction.shape == (28, 28)
    summary = summarize(results, 1.0, truth=json.loads(video.with_suffix(".json").read_text()))
    assert summary["frames"] == 4 and summary["truth"]["clean"]["frames"] == 4
    for stage in ("defense", "latency"):  # the defence's own time, and each frame's from capture to answer
        ms = summary["ms"][stage]
        assert set(ms) == {"p50", "p95", "p99", "mean"} and ms["p50"] <= ms["p95"] <= ms["p99"]
    text = format_summary(summary)
    assert "defense p50" in text and "capture to answer p50" in text and "p95" in text


def test_warm_start_carries_the_winner_and_falls_back_to_cold_after_a_scene_change(video, defender):
    warm = WarmStart(iterations=1)
    with FrameReader(str(video)) as reader:
        results = list(defend_stream(defender, reader, STEPS, warm))
    assert [r.warm for r in results] == [False] + [True] * (FRAMES - 1)
    # a warm frame differs from a cold one: its first candidate started from the previous winner
    cold = defender(STEPS(results[1].frame)[None])
    warmed = defender(STEPS(results[1].frame)[None], iterations=1, initial_latents=warm.previous[:, None])
    assert not np.array_equal(cold.reconstructions, warmed.reconstructions)
    strict = WarmStart(max_error=0.0)
    strict.update(cold)
    assert strict.arguments() == {}
    with pytest.raises(ValueError, match="initial latents shaped"):
        defender(STEPS(results[1].frame)[None], initial_latents=np.zeros((1, 3, 1, 28, 28), np.float32))


def test_the_annotated_video_has_every_frame(video, defender, tmp_path):
    out = tmp_path / "annotated.mp4"
    with FrameReader(str(video)) as reader, AnnotatedVideoWriter(out, 10.0, roi=(4, 4, 56, 56)) as writer:
        for result in defend_stream(defender, reader, STEPS):
            writer.write(result)
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    with pytest.raises(ValueError, match="ending in"):
        AnnotatedVideoWriter(tmp_path / "out.gif", 10.0)


def test_the_frame_log_summarises_as_the_results_do_without_keeping_frames(video, defender):
    with FrameReader(str(video)) as reader:
        results = list(defend_stream(defender, reader, STEPS))
    log = FrameLog()
    for result in results:
        log.append(result)
    truth = json.loads(video.with_suffix(".json").read_text())
    assert summarize(log, 1.0, 0, truth) == summarize(results, 1.0, 0, truth)
    assert [r.reconstruction_error for r in log] == [r.reconstruction_error for r in results]
    kept = sum(column.itemsize * len(column) for column in log.columns.values())
    assert kept == 12 * 8 * len(results)  # twelve doubles a frame, whatever the frame's size


def test_calibrated_threshold_flags_five_percent():
    errors = np.linspace(0, 1, 101)
    assert clean_threshold(errors) == pytest.approx(0.95)


def test_the_stream_command_reports_json_and_truth(video, tmp_path):
    out = tmp_path / "annotated.avi"
    args = [str(video), "--roi", "4,4,56,56", "--truth", str(video.with_suffix(".json")), "--json"]
    result = CliRunner().invoke(
        main, ["stream", *args, "--out-video", str(out), "--calibrate", "--max-frames", "3", "--warm-start"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["frames"] == 3 and summary["warm_frames"] == 2 and "calibrated_threshold" in summary
    assert summary["mode"] == "every-frame" and summary["paced"] is False
    assert {"p50", "p95"} <= set(summary["ms"]["defense"]) and {"p50", "p95"} <= set(summary["ms"]["latency"])
    assert summary["truth"]["clean"]["frames"] == 3 and out.is_file()


def test_fresh_only_passes_over_a_frame_captured_while_the_defence_was_busy(video, defender):
    with FrameReader(str(video)) as reader:  # any frame of the video will do
        frame = next(iter(reader))[1]

    def camera():
        """Frame 0 and frame 1 captured together; frame 2 captured when the loop asks for it, after frame 0's answer."""
        first = time.perf_counter()
        yield 0, frame, first
        yield 1, frame, first  # captured while frame 0 was defended
        yield 2, frame, time.perf_counter()

    fresh = list(defend_stream(defender, camera(), STEPS, fresh_only=True))
    assert [r.index for r in fresh] == [0, 2] and [r.skipped for r in fresh] == [0, 1]
    every = list(defend_stream(defender, camera(), STEPS))
    assert [r.index for r in every] == [0, 1, 2] and [r.skipped for r in every] == [0, 0, 0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such.mkv"], "Expected a video file"),
        (["{video}", "--roi", "1,2,3"], "x,y,width,height"),
        (["{video}", "--roi", "60,60,28,28"], "inside the frame"),
        (["{video}", "--roi", "4,4,56,56", "--fresh-only"], "needs a reader that drops them"),
    ],
)
def test_the_stream_command_fails_with_a_message_and_exit_code(video, args, message):
    result = CliRunner().invoke(main, ["stream", *[a.format(video=video) for a in args]])
    assert result.exit_code in (1, 2) and message in result.output
