"""diffdefense data fetch / data path: checked, atomic placement from a folder or a loopback HTTP server, and where
the data root is."""

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from diffdefense import data_fetch
from diffdefense.cli import main
from diffdefense.data import DATA_ENV_VAR, default_data_root, load_dataset
from diffdefense.data_fetch import FetchError, fetch_dataset
from diffdefense.data_sources import SOURCES, DataSource, KnownFile
from tests.conftest import write_idx_folder

IDX_NAMES = [f"{prefix}-{kind}-ubyte.gz" for prefix in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")]


@pytest.fixture
def tiny_source(tmp_path, monkeypatch) -> Path:
    """A folder of tiny 'official' mnist files, and a sha256 table for them in place of the package's (plus an
    optional file that the folder lacks)."""
    folder = write_idx_folder(tmp_path / "source" / "mnist", n_train=16, n_test=8)
    files = tuple(KnownFile(name, hashlib.sha256((folder / name).read_bytes()).hexdigest()) for name in IDX_NAMES)
    optional = KnownFile("extras.csv", "0" * 64, required=False)
    monkeypatch.setitem(data_fetch.SOURCES, "mnist", DataSource(("http://unused.invalid/",), (*files, optional)))
    return folder


def no_leftovers(folder: Path) -> bool:
    return not any(path.name.endswith(".part") for path in folder.iterdir())


def test_fetch_from_a_folder_places_the_checked_files(tiny_source, tmp_path):
    result = fetch_dataset("mnist", tmp_path / "root", str(tiny_source))
    assert sorted(result.placed) == sorted(IDX_NAMES) and result.skipped == ["extras.csv"]
    for name in IDX_NAMES:
        assert (result.folder / name).read_bytes() == (tiny_source / name).read_bytes()
    assert no_leftovers(result.folder)
    assert len(load_dataset("mnist", "train", tmp_path / "root")) == 16


def test_fetch_from_a_data_root_reads_its_dataset_folder_and_keeps_good_files(tiny_source, tmp_path):
    first = fetch_dataset("mnist", tmp_path / "root", str(tiny_source.parent))
    assert len(first.placed) == 4
    again = fetch_dataset("mnist", tmp_path / "root", str(tiny_source.parent))
    assert again.placed == [] and sorted(again.present) == sorted(IDX_NAMES)


@pytest.fixture
def loopback_server(tiny_source, monkeypatch):
    """An http.server on 127.0.0.1 (a free port) serving the tiny source's parent; stopped at the end."""
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)  # only loopback traffic, never through a proxy

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tiny_source.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_fetch_over_http_places_the_files_and_skips_a_missing_optional_one(loopback_server, tiny_source, tmp_path):
    result = fetch_dataset("mnist", tmp_path / "root", f"{loopback_server}/mnist/")
    assert sorted(result.placed) == sorted(IDX_NAMES) and result.skipped == ["extras.csv"]
    assert (result.folder / IDX_NAMES[0]).read_bytes() == (tiny_source / IDX_NAMES[0]).read_bytes()
    assert no_leftovers(result.folder)


def test_a_missing_required_file_over_http_names_it(loopback_server, tiny_source, tmp_path):
    (tiny_source / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FetchError, match=r"Could not fetch t10k-labels-idx1-ubyte.gz: .* answered HTTP 404"):
        fetch_dataset("mnist", tmp_path / "root", f"{loopback_server}/mnist")
    assert not (tmp_path / "root" / "mnist").exists()


def test_a_corrupted_file_is_refused_by_name_and_nothing_is_placed(tiny_source, tmp_path):
    corrupted = tiny_source / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(corrupted.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one byte flipped in the compressed stream
    corrupted.write_bytes(bytes(raw))
    with pytest.raises(FetchError, match=r"t10k-images-idx3-ubyte.gz from .* has sha256 [0-9a-f]{64}, but sha256"):
        fetch_dataset("mnist", tmp_path / "root", str(tiny_source))
    assert not (tmp_path / "root" / "mnist").exists()  # not the two files checked before it either


def test_a_corrupted_file_leaves_an_existing_folder_as_it_was(tiny_source, tmp_path):
    target = tmp_path / "root" / "mnist"
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    (tiny_source / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(FetchError, match="train-labels-idx1-ubyte.gz"):
        fetch_dataset("mnist", tmp_path / "root", str(tiny_source))
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_a_source_that_is_neither_url_nor_folder_is_refused(tiny_source, tmp_path):
    with pytest.raises(FetchError, match="Expected --from to be an http\\(s\\) URL or an existing folder"):
        fetch_dataset("mnist", tmp_path / "root", str(tmp_path / "nowhere"))


def test_the_cli_fetches_and_reports_a_mismatch_with_exit_1(tiny_source, tmp_path):
    args = ["data", "fetch", "mnist", "--from", str(tiny_source), "--data-root", str(tmp_path / "root")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "placed   train-images-idx3-ubyte.gz" in result.output
    (tiny_source / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    result = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "other")])
    assert result.exit_code == 1 and "Error: train-images-idx3-ubyte.gz from" in result.output


def test_every_known_file_has_a_checksum_and_every_preset_needs_its_test_split():
    for source in SOURCES.values():
        assert all(known.sha256 or known.md5 for known in source.files)
        assert all(known.sha256 for known in source.files if known.required)
        required = {known.name for known in source.files if known.required}
        assert {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"} <= required


def test_the_package_table_matches_the_real_files(real_data_root, tmp_path):
    for dataset in SOURCES:
        result = fetch_dataset(dataset, tmp_path, str(real_data_root))
        assert all(known.name in result.placed for known in SOURCES[dataset].files if known.required)
    assert len(load_dataset("kmnist", "test", tmp_path)) == 2000


def test_data_root_is_the_option_then_the_environment_then_the_xdg_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_data_root() == tmp_path / "home" / ".cache" / "diffdefense"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as the XDG specification asks
    assert default_data_root() == tmp_path / "home" / ".cache" / "diffdefense"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_root() == tmp_path / "xdg" / "diffdefense"
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "env"))
    assert default_data_root() == tmp_path / "env"
    assert CliRunner().invoke(main, ["data", "path"]).output.strip() == str(tmp_path / "env")
    result = CliRunner().invoke(main, ["data", "path", "--data-root", str(tmp_path / "option")])
    assert result.output.strip() == str(tmp_path / "option")
