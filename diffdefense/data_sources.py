"""Where the preset data sets come from, and the checksum of every official file this package knows.

``diffdefense data fetch`` places a file only after its bytes match this table. ``required`` files must be at the
source; optional ones are placed when the source has them and skipped when it has not.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownFile:
    """One official file. ``sha256``: what this package checks it against. ``md5``: the published MD5, checked
    instead where this package records no sha256 (a file it has never seen whole)."""

    name: str
    sha256: str | None = None
    md5: str | None = None
    required: bool = True


@dataclass(frozen=True)
class DataSource:
    """A preset's official mirrors (base URLs, tried in order) and its files."""

    mirrors: tuple[str, ...]
    files: tuple[KnownFile, ...]


SOURCES: dict[str, DataSource] = {
    # MNIST (LeCun, Cortes and Burges): all four files, all required.
    "mnist": DataSource(
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        files=(
            KnownFile("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            KnownFile("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            KnownFile("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            KnownFile("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        ),
    ),
    # Kuzushiji-MNIST (ROIS-DS CODH), the current ("v2") release. The package knows the sha256 of the test images,
    # the test labels and the training labels (the KMNIST preset trains on a split of the test images). The
    # training images are optional: checked against their published MD5. The class map is optional too (the
    # package carries the class names itself).
    "kmnist": DataSource(
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        files=(
            KnownFile("t10k-images-idx3-ubyte.gz", "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"),
            KnownFile("t10k-labels-idx1-ubyte.gz", "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"),
            KnownFile("train-labels-idx1-ubyte.gz", "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"),
            KnownFile("train-images-idx3-ubyte.gz", md5="bdb82020997e1d708af4cf47b453dcf7", required=False),
            KnownFile(
                "kmnist_classmap.csv",
                "88ba4be4bd52d986ae100b425d5c28437c81829c87800c5832a2253edc758374",
                required=False,
            ),
        ),
    ),
}
