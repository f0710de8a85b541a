"""Property tests (hypothesis, issue 7) on the commands `diffdefense defend` and `diffdefense stream`, run through
click's CliRunner with random values for their options and input files of random content. Each run must end in
exit code 0 with output that passes the checks below, or 1 ('Error: ...') or 2 (a usage error) with a message, as
the arguments alone decide; never a traceback (an exception other than SystemExit) or a hang.

Generated runs per test by default; DIFFDEFENSE_HYPOTHESIS_EXAMPLES=N runs N for each instead, and pytest's
--hypothesis-show-statistics prints each test's count with the share of each exit code (its events):

    defend: 1 to 3 inputs (arrays with and without labels, pictures, folders; images out of range, wrong dtypes
            and shapes, object arrays, random bytes, undecodable pictures, empty folders, a missing file) x
            --bundle --dataset --preset --provider --threshold --roi --value-range --invert --batch-size
            --fail-on-attack --json and an unknown option                                                    50
    stream: a video, a file of random bytes, a missing file, a camera index, a GStreamer pipeline x --bundle
            --preset --provider --threshold --roi --value-range --channel-order --warm-start/--cold-start
            --warm-iterations --max-frames --queue-size --drop-oldest/--every-frame --realtime --read-timeout
            --out-video --truth --calibrate --quiet --json                                                   50

A successful run passes when: --json output is strict JSON (no NaN); defend answers every image once, in order,
with a known label, a probability in [0, 1], a finite error >= 0, and the file's truth where it has one, and exits
3 exactly when --fail-on-attack is given and an input is flagged; stream answers at most --max-frames frames, every
one unless frames may be dropped, warm-starts every frame after the first when warm start is on, and reports
finite timings.

The defence's cost is not under test: the shipped bundles are copied with cheap default settings (R 2, L 1) and
the presets are patched to the same, so that a run takes a fraction of a second. Defects the property tests
found are reproduced at the end (once strict xfails, now fixed).
"""

import json
import math
import os
import shutil
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

cv2 = pytest.importorskip("cv2", reason="OpenCV (the [video] extra) is not installed")

from click.testing import CliRunner  # noqa: E402

import diffdefense.runtime.defender as defender_module  # noqa: E402
from diffdefense import shipped  # noqa: E402
from diffdefense.cli import main  # noqa: E402
from diffdefense.runtime.backends import available_providers  # noqa: E402
from diffdefense.settings import PRESETS  # noqa: E402

CHEAP = {name: preset.with_(num_candidates=2, iterations=1) for name, preset in PRESETS.items()}
VIDEO_FRAMES = 5
WARM_START_DEFAULT = next(p.default for p in main.commands["stream"].params if p.name == "warm_start")
SAMPLES = np.load(shipped.SAMPLES_DIR / "mnist.npz")


def one_in(draw_, n: int) -> bool:
    """True one time in n. Not at an end of the range: hypothesis draws the ends of a range far more often."""
    return draw_(st.integers(0, n - 1)) == n // 2


def cases(default: int) -> settings:
    count = int(os.environ.get("DIFFDEFENSE_HYPOTHESIS_EXAMPLES", default))
    slow = [HealthCheck.too_slow, HealthCheck.data_too_large]
    return settings(max_examples=count, deadline=None, database=None, suppress_health_check=slow)


@pytest.fixture(scope="module")
def cheap(tmp_path_factory):
    """Copies of the shipped bundles whose default (and calibrated) settings are CHEAP['default'], standing in for
    the shipped ones; the presets patched to CHEAP."""
    root = tmp_path_factory.mktemp("bundles")
    for dataset in ("mnist", "kmnist"):
        copy = shutil.copytree(shipped.BUNDLES_DIR / dataset, root / dataset)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["defaults"]["settings"] = CHEAP["default"].to_dict()
        if manifest.get("detection"):
            manifest["detection"]["settings"] = CHEAP["default"].to_dict()
        (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shipped, "bundle_dir", lambda dataset: root / dataset)
        patch.setattr(defender_module, "PRESETS", CHEAP)
        yield root


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A lossless 56 x 40 colour video of VIDEO_FRAMES sample digits."""
    path = tmp_path_factory.mktemp("video") / "digits.mkv"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (56, 40))
    for k in range(VIDEO_FRAMES):
        frame = np.zeros((40, 56), np.uint8)
        frame[6:34, 14:42] = (255 * SAMPLES["images"][k, 0]).round().astype(np.uint8)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def run(args: list[str]):
    """The command's result; a traceback (any exception but SystemExit) fails the test at once."""
    result = CliRunner().invoke(main, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args} raised {result.exception!r}:\n{result.output}") from result.exception
    try:
        event(f"exit {result.exit_code}")
    except InvalidArgument:  # outside a hypothesis test
        pass
    return result


def assert_failed(result, codes: set[int]) -> None:
    assert result.exit_code in codes, result.output
    message = result.output.split("Error:", 1)[-1].strip()
    assert "Error:" in result.output and len(message) > 10, result.output
    if result.exit_code == 2:
        assert "Usage:" in result.output


def strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"the JSON output holds {constant}, which JSON does not have")

    return json.loads(text, parse_constant=refuse)


class Arguments:
    """A command line built from draws, and the exit code that its arguments alone call for."""

    def __init__(self, draw_, *args: str) -> None:
        self.draw_, self.args = draw_, list(args)
        self.usage = self.fails = self.maybe = False  # maybe: the outcome may turn on timing or the machine

    def option(self, name: str, good, bad_usage=(), bad_input=(), timing=(), every: int = 25):
        """name with a value: left out or a good one, or one time in `every` a bad or timing-dependent one."""
        rare = [*bad_usage, *bad_input, *timing]
        pick_rare = rare and one_in(self.draw_, every)
        value = self.draw_(st.sampled_from(rare if pick_rare else [None, *good]))
        if value is not None:
            self.args += [name, value]
            self.usage |= value in bad_usage
            self.fails |= value in bad_input
            self.maybe |= value in timing
        return value

    def flag(self, name: str) -> bool:
        on = self.draw_(st.booleans())
        self.args += [name] * on
        return on

    def provider(self, names) -> None:
        """--provider: the CPU, or now and then a GPU one, which fails here and may run on a GPU machine."""
        provider = self.option("--provider", ["cpu"], bad_usage=["gpu"], timing=names)
        wanted = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}.get(provider)
        self.fails |= wanted is not None and wanted not in available_providers()

    def outcome(self, result, success=frozenset({0})) -> bool:
        """Checks a failure's exit code and message; True when the run must have succeeded (and did)."""
        if self.usage:
            assert_failed(result, {2})
        elif self.fails or self.maybe and result.exit_code not in success:
            assert_failed(result, {1})
        else:
            assert result.exit_code in success, result.output
            return True
        return False


# --- defend --------------------------------------------------------------------------------------------------------


def write_input(draw_, path: Path) -> tuple[Path, list[tuple[str, int]] | None]:
    """Writes one input: a file of some kind (a picture takes a picture's suffix), or a folder holding one array
    file or none. Returns its path and the rows it must give, (file, images) per file read, or None where the
    command must refuse it with exit code 1."""
    refused = ["range", "dtype", "shape", "objects", "bytes", "picture bytes", "empty folder"]
    kind = draw_(st.sampled_from(refused if one_in(draw_, 5) else ["images"] * 5 + ["picture", "folder"]))
    n = draw_(st.integers(1, 5))
    rng = np.random.default_rng(draw_(st.integers(0, 2**32 - 1)))
    if kind in ("folder", "empty folder"):
        path.mkdir()
        if kind == "empty folder":
            return path, None
        np.savez(path / "inner.npz", images=SAMPLES["images"][:n])
        return path, [(str(path / "inner.npz"), n)]
    if kind in ("picture", "picture bytes"):
        path = path.with_suffix(draw_(st.sampled_from([".png", ".bmp", ".jpg"])))
        frame = rng.integers(0, 256, (draw_(st.integers(20, 60)), draw_(st.integers(20, 60)), 3), dtype=np.uint8)
        path.write_bytes(cv2.imencode(path.suffix, frame)[1].tobytes() if kind == "picture" else draw_(st.binary()))
        return path, [(str(path), 1)] if kind == "picture" else None
    if kind == "bytes":
        path.write_bytes(
            draw_(st.binary(min_size=1, max_size=300).filter(lambda b: not b.startswith((b"PK", b"\x93NUMPY"))))
        )
        return path, None
    images = {
        "images": lambda: SAMPLES["images"][rng.integers(0, 16, n)],
        "range": lambda: rng.random((n, 1, 28, 28)).astype(np.float32) * 2 - 0.5,
        "dtype": lambda: rng.integers(0, 2, (n, 28, 28)),
        "shape": lambda: rng.random((n, 784)).astype(np.float32),
        "objects": lambda: np.array([{"image": 1}] * n, dtype=object),
    }[kind]()
    if kind == "images" and draw_(st.booleans()):
        images = (255 * images[:, 0]).astype(np.uint8)
    truth = {}
    if kind == "images" and draw_(st.booleans()):
        truth["labels"] = rng.integers(0, 10, n)
    if kind == "images" and draw_(st.booleans()):
        truth["attacked"] = rng.integers(0, 2, n).astype(bool)
    with open(path, "wb") as handle:  # np.save and np.savez on a name would add their suffix
        if path.suffix == ".npy":
            np.save(handle, images, allow_pickle=True)
        else:
            np.savez(handle, images=images, allow_pickle=True, **truth)
    return path, [(str(path), n)] if kind == "images" else None


@cases(50)
@given(data=st.data())
def test_defend_answers_or_fails_with_a_message(cheap, data):
    with TemporaryDirectory() as folder:
        folder = Path(folder)
        names = data.draw(st.lists(st.sampled_from(["in.npz", "in.npy", "in.dat"]), min_size=1, max_size=3))
        written = [write_input(data.draw, folder / f"{k}{name}") for k, name in enumerate(names)]
        line = Arguments(data.draw, "defend", *(str(path) for path, _ in written))
        line.fails |= any(rows is None for _, rows in written)
        if one_in(data.draw, 10):
            line.args.append(str(folder / "missing.npz"))
            line.usage = True
        (folder / "empty").mkdir()
        bundle = line.option(
            "--bundle", [str(cheap / "mnist")], bad_input=[str(folder / "none"), str(folder / "empty")], every=6
        )
        fails_before = line.fails
        dataset = line.option("--dataset", ["mnist", "kmnist"], bad_input=["cifar"])  # a data set with no bundle
        if dataset == "cifar" and bundle is not None:
            line.fails = fails_before  # --bundle names the bundle; the data set is not looked up
        line.option("--preset", ["paper", "default"], bad_usage=["fast"])
        line.provider(["cuda", "tensorrt"])
        line.option("--threshold", ["0", "0.02", "1e9"], bad_usage=["-1", "nan", "inf"])
        line.option("--roi", ["0,0,1,1", "0,0,20,20"], ["1,2,3"], ["0,0,0,5"])  # applies to pictures
        line.option("--value-range", ["auto", "20,200"], ["x"], ["nan,1", "5,5"])
        line.flag("--invert")
        line.option("--batch-size", ["1", "3", "8"], bad_usage=["0", "-2", "x"])
        fail_on_attack = line.flag("--fail-on-attack")
        as_json = line.flag("--json")
        if one_in(data.draw, 20):
            line.args.append("--frobnicate")
            line.usage = True
        result = run(line.args)
        if line.outcome(result, success={0, 3} if fail_on_attack else {0}):
            rows = [row for _, rows in written for row in rows]
            flagged = check_defend_output(
                result.output, rows, as_json, bundle or shipped.bundle_dir(dataset or "mnist")
            )
            assert result.exit_code == (3 if fail_on_attack and flagged else 0)


def check_defend_output(output: str, expected: list[tuple[str, int]], as_json: bool, bundle) -> bool:
    """Checks the report; returns whether any input was flagged."""
    total = sum(count for _, count in expected)
    if not as_json:
        lines = output.strip().splitlines()
        assert len(lines) == total + 1 and lines[-1].startswith(f"{total} images, ")
        return any(line.endswith("FLAGGED") for line in lines)
    report = strict_json(output)
    rows = report["results"]
    assert [(row["file"], row["index"]) for row in rows] == [(f, i) for f, count in expected for i in range(count)]
    labels = json.loads((Path(bundle) / "manifest.json").read_text())["labels"]
    for row in rows:
        assert row["label"] in labels and 0 <= row["probability"] <= 1
        assert math.isfinite(row["reconstruction_error"]) and row["reconstruction_error"] >= 0
        assert isinstance(row["attack_flag"], bool) and row.get("true_label", labels[0]) in labels
    assert report["latency"]["images"] == total and math.isfinite(report["latency"]["per_image_ms_median"])
    return any(row["attack_flag"] for row in rows)


# --- stream --------------------------------------------------------------------------------------------------------


@cases(50)
@given(data=st.data())
def test_stream_answers_or_fails_with_a_message(cheap, video, data):
    with TemporaryDirectory() as folder:
        folder = Path(folder)
        kind = data.draw(st.sampled_from(["video"] * 28 + ["bytes", "missing", "7", "nosuchelement ! appsink"]))
        if kind == "bytes":
            (folder / "random.mkv").write_bytes(data.draw(st.binary(min_size=1, max_size=2000)))
        source = {"video": str(video), "bytes": str(folder / "random.mkv"), "missing": str(folder / "none.mkv")}
        line = Arguments(data.draw, "stream", source.get(kind, kind))
        line.fails |= kind != "video"
        line.option("--bundle", [str(cheap / "kmnist")], bad_input=[str(folder / "none")], every=8)
        line.option("--preset", ["paper", "default"], bad_usage=["fast"])
        line.provider(["cuda", "tensorrt-engine"])
        threshold = line.option("--threshold", ["0", "0.01", "1e9"], bad_usage=["-1", "nan", "inf"])
        line.option(
            "--roi", ["0,0,56,40", "10,4,30,30", "14,6,28,28"], ["1,2,3", "a,b,c,d"], ["50,30,20,20", "0,0,0,5"]
        )
        line.option("--value-range", ["auto", "0,255", "20,200"], ["x"], ["nan,1", "0,inf", "5,5"])
        line.option("--channel-order", ["bgr", "rgb"], bad_usage=["hsv"])
        line.option("--warm-iterations", ["1", "3"], bad_usage=["0"])
        max_frames = line.option("--max-frames", ["1", "3", "8"], bad_usage=["0"])
        line.option("--queue-size", ["1", "4"], bad_usage=["0"])
        line.option("--read-timeout", ["5", "0.5"], ["abc"], ["-1", "nan", "inf"], timing=["0", "1e-9"])
        (folder / "file").write_text("a file, not a folder")
        outs = [str(folder / name) for name in ("out.avi", "out.mkv", "out.mp4", "out.gif", "file/out.avi")]
        line.option("--out-video", outs[:3], bad_input=outs[3:], every=8)
        frames = [{"label": int(label), "attacked": False} for label in SAMPLES["labels"][:VIDEO_FRAMES]]
        contents = {
            "full": json.dumps({"frames": frames}),
            "short": json.dumps({"frames": frames[:2]}),
            "not json": "{frames",
            "wrong shape": json.dumps({"frames": [{"label": "six"}] * VIDEO_FRAMES}),
        }
        for name, content in contents.items():
            (folder / f"{name}.json").write_text(content)
        truth = line.option(
            "--truth",
            [str(folder / "full.json"), str(folder / "short.json")],
            bad_usage=[str(folder / "missing.json")],
            bad_input=[str(folder / "not json.json"), str(folder / "wrong shape.json")],
            every=8,
        )
        flags = {name: line.flag(name) for name in ("--calibrate", "--quiet", "--json", "--realtime")}
        start = data.draw(st.sampled_from([None, "--warm-start", "--cold-start"]))
        line.args += [start] if start else []
        flags["warm"] = start == "--warm-start" if start else WARM_START_DEFAULT
        drop = data.draw(st.sampled_from([None, None, "--drop-oldest", "--every-frame"]))
        line.args += [drop] if drop else []
        may_drop = drop == "--drop-oldest" or flags["--realtime"] and drop is None  # a paced file drops by default
        expected = min(int(max_frames or VIDEO_FRAMES), VIDEO_FRAMES)
        if truth and truth.endswith("short.json"):  # truth for frames 0 and 1 only: a later index fails
            line.fails |= expected > 2
            line.maybe |= may_drop
        result = run(line.args)
        if kind == "bytes" and not line.usage and result.exit_code == 0:  # FFmpeg took it for a video: no frames
            assert "No frames were read." in result.output or strict_json(result.output)["frames"] == 0
        elif line.outcome(result):
            check_stream_output(result.output, flags, expected, may_drop, threshold, truth)


def check_stream_output(output: str, flags: dict, expected: int, may_drop: bool, threshold, truth) -> None:
    if not flags["--json"]:
        per_frame = [line for line in output.splitlines() if line.startswith("frame ")]
        assert "frames per second" in output
        if flags["--quiet"]:
            assert not per_frame
        else:
            assert 1 <= len(per_frame) <= expected and (may_drop or len(per_frame) == expected)
        return
    summary = strict_json(output)
    assert 1 <= summary["frames"] <= expected and (may_drop or summary["frames"] == expected)
    assert summary["warm_frames"] == (summary["frames"] - 1 if flags["warm"] else 0)
    assert 0 <= summary["flagged"] <= summary["frames"]
    if threshold is not None:
        assert summary["threshold"] == float(threshold)
    for stage in summary["ms"].values():
        assert all(math.isfinite(v) and v >= 0 for v in stage.values())
    if flags["--calibrate"]:
        assert math.isfinite(summary["calibrated_threshold"]) and summary["calibrated_threshold"] >= 0
    if truth and truth.endswith(("full.json", "short.json")):
        clean = summary["truth"]["clean"]
        assert clean["frames"] == summary["frames"] and 0 <= clean["accuracy"] <= 1


# --- Reported defects (once strict xfails, now fixed) -----------------------------------------------------------


@pytest.fixture
def images_file(tmp_path):
    def write(**arrays) -> str:
        path = tmp_path / "in.npz"
        np.savez(path, **arrays)
        return str(path)

    return write


@pytest.mark.parametrize(
    "truth",
    [
        {"labels": [-1, 1, 2]},
        {"labels": [42, 1, 2]},
        {"labels": [1]},
        {"labels": [np.nan, 1.0, 2.0]},
        {"attacked": [[True, False]] * 3},
        {"attacked": [True]},
    ],
    ids=["minus-one-shown-as-9", "42-IndexError", "short-IndexError", "nan", "2d-attacked-ambiguous", "short-attacked"],
)
def test_reported_defend_refuses_labels_or_flags_that_are_not_one_per_image(cheap, images_file, truth):
    path = images_file(images=SAMPLES["images"][:3], **{key: np.array(value) for key, value in truth.items()})
    result = run(["defend", path, "--json"])
    assert_failed(result, {1})
    assert path in result.output and next(iter(truth)) in result.output, result.output


def test_reported_defend_refuses_a_file_without_images(cheap, images_file):
    path = images_file(images=np.zeros((0, 28, 28), np.uint8))
    result = run(["defend", path, "--json"])
    assert_failed(result, {1})
    assert path in result.output, result.output


def test_reported_defend_refuses_a_damaged_npz_with_a_message(cheap, tmp_path):
    (tmp_path / "in.npz").write_bytes(b"PK\x03\x04" + bytes(100))
    result = run(["defend", str(tmp_path / "in.npz")])
    assert_failed(result, {1})
    assert str(tmp_path / "in.npz") in result.output, result.output


@pytest.mark.parametrize("threshold", ["nan", "inf"])
def test_reported_stream_refuses_a_threshold_that_is_not_a_finite_number(cheap, video, threshold):
    assert_failed(run(["stream", str(video), "--threshold", threshold, "--json", "--max-frames", "1"]), {2})


@pytest.mark.parametrize("content", [json.dumps({"frames": 5}), "{frames"], ids=["wrong-shape", "not-json"])
def test_reported_stream_refuses_a_bad_truth_file_before_streaming(cheap, video, tmp_path, content):
    (tmp_path / "truth.json").write_text(content)
    out = tmp_path / "out.avi"
    args = ["stream", str(video), "--truth", str(tmp_path / "truth.json"), "--out-video", str(out)]
    result = run(args)
    assert_failed(result, {1})
    assert str(tmp_path / "truth.json") in result.output, result.output
    assert not out.exists(), "the stream ran (and wrote its video) before the truth file was refused"
