"""fastbp.save / fastbp.load: bit-exact round trip, atomic writes, and every kind of
bad file rejected with a message naming the file and the problem."""

from __future__ import annotations

import io as _io
import json
import os
import zipfile

import numpy as np
import pytest

import fastbp
from fastbp.io import FORMAT_VERSION, ModelFileError

NETS = [
    fastbp.Network([4, 8, 3], "sigmoid", "bce"),
    fastbp.Network([3, 2, 1], "sigmoid", "sse", reduction="sum", bias=False),
    fastbp.Network([5, 6, 4], ["tanh", "softmax"], "cross_entropy", l2=0.01,
                   bias=[True, False], dtype="float32"),
]


@pytest.mark.parametrize("net", NETS, ids=repr)
def test_round_trip_is_bit_exact(tmp_path, net):
    p = net.init(seed=3)
    path = tmp_path / "model.npz"
    fastbp.save(path, net, p)
    net2, p2 = fastbp.load(path)
    assert net2 == net
    assert p2 == p  # same layout, dtype and bits
    assert p2.flat.flags.writeable


def test_save_replaces_atomically_and_leaves_no_temp_file(tmp_path):
    net = NETS[0]
    path = tmp_path / "m.npz"
    fastbp.save(path, net, net.init(seed=0))
    os.chmod(path, 0o640)
    fastbp.save(str(path), net, net.init(seed=1))
    assert fastbp.load(path)[1] == net.init(seed=1)
    assert os.listdir(tmp_path) == ["m.npz"]
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    net = NETS[0]
    path = tmp_path / "m.npz"
    fastbp.save(path, net, net.init(seed=0))
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        fastbp.save(path, net, net.init(seed=1))
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"]


def test_save_validates_its_arguments(tmp_path):
    with pytest.raises(TypeError, match="net"):
        fastbp.save(tmp_path / "m.npz", "net", NETS[0].init())
    with pytest.raises(ValueError, match="params"):
        fastbp.save(tmp_path / "m.npz", NETS[0], NETS[1].init())


def _saved(tmp_path):
    net = NETS[0]
    path = tmp_path / "m.npz"
    fastbp.save(path, net, net.init(seed=0))
    return path


def _rewrite(path, theta=None, meta=None, extra=None):
    """Write a new archive with the given entries (a hand-made, possibly bad file)."""
    with np.load(path) as a:
        entries = {"theta": a["theta"], "meta": a["meta"]}
    if theta is not None:
        entries["theta"] = theta
    if meta is not None:
        entries["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    if extra:
        entries.update(extra)
    np.savez(path, **entries)


def _meta(path):
    with np.load(path) as a:
        return json.loads(a["meta"].tobytes())


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz: no such file"):
        fastbp.load(tmp_path / "nope.npz")


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9, 0.999])
def test_truncated_file_rejected(tmp_path, keep):
    path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFileError, match=r"m\.npz: .*(corrupt|truncated)"):
        fastbp.load(path)


def test_flipped_byte_in_weights_rejected(tmp_path):
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    at = data.find(b"\x93NUMPY", data.find(b"theta")) + 200  # inside theta's data
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"m\.npz: .*(corrupt|CRC)"):
        fastbp.load(path)


def test_tampered_weights_with_valid_zip_rejected(tmp_path):
    path = _saved(tmp_path)
    with np.load(path) as a:
        theta = a["theta"].copy()
    theta[0] += 1.0
    _rewrite(path, theta=theta)
    with pytest.raises(ModelFileError, match="checksum"):
        fastbp.load(path)


def test_mismatched_sizes_rejected(tmp_path):
    path = _saved(tmp_path)
    meta = _meta(path)
    meta["network"]["sizes"] = [4, 9, 3]
    _rewrite(path, meta=meta)
    with pytest.raises(ModelFileError, match="parameters stored"):
        fastbp.load(path)


def test_invalid_network_rejected(tmp_path):
    path = _saved(tmp_path)
    meta = _meta(path)
    meta["network"]["activations"] = ["sigmoid", "swish"]
    _rewrite(path, meta=meta)
    with pytest.raises(ModelFileError, match="invalid network description.*swish"):
        fastbp.load(path)


def test_newer_format_rejected(tmp_path):
    path = _saved(tmp_path)
    meta = _meta(path)
    meta["format_version"] = FORMAT_VERSION + 1
    _rewrite(path, meta=meta)
    with pytest.raises(ModelFileError, match="newer than this fastbp reads"):
        fastbp.load(path)


def test_dtype_mismatch_rejected(tmp_path):
    path = _saved(tmp_path)
    with np.load(path) as a:
        theta = a["theta"].astype(np.float32)
    _rewrite(path, theta=theta)
    with pytest.raises(ModelFileError, match="float32 but the network is float64"):
        fastbp.load(path)


def test_other_npz_and_other_files_rejected(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.arange(3))
    with pytest.raises(ModelFileError, match="not a fastbp model file"):
        fastbp.load(path)
    text = tmp_path / "model.npz"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="model.npz: not a readable fastbp model"):
        fastbp.load(text)
    with pytest.raises(ModelFileError, match="directory"):
        fastbp.load(tmp_path)


def test_extra_entry_rejected(tmp_path):
    path = _saved(tmp_path)
    _rewrite(path, extra={"payload": np.zeros(2)})
    with pytest.raises(ModelFileError, match="entries"):
        fastbp.load(path)


def test_pickled_entry_is_never_unpickled(tmp_path):
    """An object array in place of the metadata would need pickle: refused."""
    path = _saved(tmp_path)
    with np.load(path) as a:
        theta = a["theta"]
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, arr in (("theta", theta), ("meta", np.array([{"evil": 1}], dtype=object))):
            b = _io.BytesIO()
            np.save(b, arr, allow_pickle=True)
            z.writestr(name + ".npy", b.getvalue())
    path.write_bytes(buf.getvalue())
    with pytest.raises(ModelFileError, match="m.npz"):
        fastbp.load(path)


def test_predict_helpers_and_accuracy():
    X = np.random.default_rng(0).normal(size=(6, 4))
    net = NETS[0]  # sigmoid + bce, 3 outputs: one decision per unit
    p = net.init(seed=0)
    out = net.forward(p, X)
    np.testing.assert_array_equal(net.predict_proba(p, X), out)
    np.testing.assert_array_equal(net.predict(p, X), (out > 0.5).astype(np.int64))

    sm = fastbp.Network([4, 3], "softmax", "cross_entropy")
    q = sm.init(seed=1)
    proba = sm.predict_proba(q, X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    labels = sm.predict(q, X)
    assert labels.dtype == np.int64 and labels.shape == (6,)
    np.testing.assert_array_equal(labels, proba.argmax(axis=1))

    one = fastbp.Network([4, 1], "sigmoid", "bce")
    r = one.init(seed=2)
    assert one.predict(r, X).shape == (6,)

    reg = fastbp.Network([4, 2], "identity", "sse")
    np.testing.assert_array_equal(reg.predict(reg.init(seed=0), X), reg.forward(reg.init(0), X))
    with pytest.raises(TypeError, match="predict_proba"):
        reg.predict_proba(reg.init(seed=0), X)


def test_accuracy():
    acc = fastbp.metrics.accuracy
    assert acc([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    assert acc(np.eye(3)[[0, 1, 2, 2]], [0, 1, 1, 2]) == 0.75  # one-hot truth
    assert acc(np.array([[1], [0]]), np.array([1, 1])) == 0.5  # single output column
    assert acc([[1, 0], [1, 1]], [[1, 0], [0, 1]]) == 0.5  # every unit must match
    with pytest.raises(ValueError, match="shapes"):
        acc([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="no examples"):
        acc([], [])
