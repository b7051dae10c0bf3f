"""fastbp.save / fastbp.load: bit-exact round trip, atomic writes, and every kind of
bad file rejected with a message naming the file and the problem."""

from __future__ import annotations

import hashlib
import io as _io
import json
import os
import re
import struct
import sys
import time
import tracemalloc
import warnings
import zipfile
import zlib

import numpy as np
import pytest

import fastbp
from fastbp.io import (
    FORMAT_VERSION,
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    MAX_META_BYTES,
    ModelFileError,
    check_destination,
)

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


def _shift_first_weight(path):
    """Rewrite the file with its first parameter changed by 1 and nothing else
    (a valid archive whose checksum no longer matches)."""
    with np.load(path) as a:
        theta = a["theta"].copy()
    theta[0] += 1.0
    _rewrite(path, theta=theta)


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
    _shift_first_weight(path)
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


# ---------------------------------------------------------------------- crafted files
# Files made by hand from the format's description (module docstring of fastbp.io),
# independently of fastbp's own writer.


def _npy(arr, allow_pickle=False):
    b = _io.BytesIO()
    np.save(b, arr, allow_pickle=allow_pickle)
    return b.getvalue()


def _npy_header(descr, shape, fortran=False):
    """A version 1.0 .npy header declaring anything, padded as numpy pads it."""
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    pad = -(10 + len(text) + 1) % 64
    text = text + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def _json_npy(text):
    return _npy(np.frombuffer(text if isinstance(text, bytes) else text.encode(), np.uint8))


def _fields(net=None, theta=None, metadata=None, **changes):
    """The metadata fields of a version 2 file, sha256 left out."""
    net = NETS[0] if net is None else net
    theta = net.init(seed=0).flat if theta is None else theta
    fields = {"format": "fastbp-model", "format_version": 2, "fastbp_version": "0.1.0",
              "network": net.to_dict(), "n_params": int(theta.size),
              "dtype": theta.dtype.name, "metadata": metadata}
    fields.update(changes)
    return fields


def _signed(fields, theta):
    """``fields`` with the version 2 checksum: canonical JSON, NUL, parameter bytes."""
    covered = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("ascii")
    digest = hashlib.sha256(covered + b"\0" + theta.tobytes()).hexdigest()
    return dict(fields, sha256=digest)


def _archive(path, entries, compression=zipfile.ZIP_STORED):
    """A zip of (name, bytes) entries, duplicate names included when asked for."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of duplicate names
        with zipfile.ZipFile(path, "w", compression) as z:
            for name, data in entries:
                z.writestr(name, data)
    return path


def _model_entries(fields=None, theta=None):
    theta = NETS[0].init(seed=0).flat if theta is None else theta
    fields = _signed(_fields(theta=theta), theta) if fields is None else fields
    return [("theta.npy", _npy(theta)), ("meta.npy", _json_npy(json.dumps(fields)))]


def _raw_zip(path, entries):
    """A zip written field by field: (name, method, crc, data, uncompressed size)."""
    out = bytearray()
    directory = bytearray()
    for name, method, crc, data, size in entries:
        n = name.encode()
        directory += struct.pack("<4s4H2H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 33,
                                 crc, len(data), size, len(n), 0, 0, 0, 0, 0, len(out)) + n
        out += struct.pack("<4s3H2H3L2H", b"PK\x03\x04", 20, 0, method, 0, 33, crc,
                           len(data), size, len(n), 0) + n + data
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                      len(directory), len(out), 0)
    path.write_bytes(bytes(out + directory + end))
    return path


def _record(data, signature, name):
    """Offset of the local or the central directory record of entry ``name``."""
    name_at = 30 if signature == b"PK\x03\x04" else 46
    at = data.find(signature)
    while at >= 0 and data[at + name_at:at + name_at + len(name)] != name:
        at = data.find(signature, at + 1)
    assert at >= 0
    return at


def test_npy_file_renamed_npz_rejected(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(_npy(np.arange(10.0)))
    with pytest.raises(ModelFileError, match=r"weights\.npz: not a readable fastbp model file"):
        fastbp.load(path)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_deeply_nested_json_rejected(tmp_path, depth):
    text = json.dumps(_signed(_fields(), NETS[0].init(seed=0).flat))
    nested = "[" * (depth - 1) + "]" * (depth - 1)  # the top-level object is one level
    text = text.replace('"metadata": null', f'"metadata": {nested}')
    path = _archive(tmp_path / "m.npz", [("theta.npy", _npy(NETS[0].init(seed=0).flat)),
                                         ("meta.npy", _json_npy(text))])
    with pytest.raises(ModelFileError, match=rf"m\.npz: .*nested more than {MAX_JSON_DEPTH}"):
        fastbp.load(path)


def test_nesting_up_to_the_limit_round_trips_and_save_refuses_deeper(tmp_path):
    def nested(levels):  # a dict holding lists: ``levels`` deep, the dict included
        value = 1
        for _ in range(levels - 1):
            value = [value]
        return {"x": value}

    net, p = NETS[0], NETS[0].init(seed=0)
    deepest = nested(MAX_JSON_DEPTH - 1)  # inside the file's own object
    fastbp.save(tmp_path / "m.npz", net, p, metadata=deepest)
    assert fastbp.io.load_with_metadata(tmp_path / "m.npz")[2] == deepest
    with pytest.raises(ValueError, match="metadata: nested more than"):
        fastbp.save(tmp_path / "m2.npz", net, p, metadata=nested(MAX_JSON_DEPTH))
    with pytest.raises(ValueError, match="metadata: nested more than"):
        fastbp.save(tmp_path / "m2.npz", net, p, metadata=nested(10_000))
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_huge_integer_in_json_rejected_naming_the_file(tmp_path):
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else None
    text = json.dumps(_signed(_fields(), NETS[0].init(seed=0).flat))
    text = text.replace('"n_params": 67', '"n_params": 1' + "0" * 4999)
    path = _archive(tmp_path / "m.npz", [("theta.npy", _npy(NETS[0].init(seed=0).flat)),
                                         ("meta.npy", _json_npy(text))])
    with pytest.raises(ModelFileError, match=r"m\.npz: corrupt metadata .*5000 digits"):
        fastbp.load(path)
    if limit is not None:  # the interpreter-wide limit is left alone
        assert sys.get_int_max_str_digits() == limit


def test_save_refuses_metadata_load_would_refuse(tmp_path):
    net, p = NETS[0], NETS[0].init(seed=0)
    with pytest.raises(ValueError, match=f"metadata: an integer of {MAX_INT_DIGITS + 1} digits"):
        fastbp.save(tmp_path / "m.npz", net, p, metadata={"n": 10 ** MAX_INT_DIGITS})
    with pytest.raises(ValueError, match="metadata: duplicate key '1'"):
        fastbp.save(tmp_path / "m.npz", net, p, metadata={1: "a", "1": "b"})
    with pytest.raises(ValueError, match="metadata: .* bytes of JSON"):
        fastbp.save(tmp_path / "m.npz", net, p, metadata={"s": "x" * MAX_META_BYTES})
    with pytest.raises(TypeError, match="metadata: not JSON-serializable"):
        fastbp.save(tmp_path / "m.npz", net, p, metadata={"f": object()})
    assert os.listdir(tmp_path) == []
    # what save accepts reads back as JSON gives it
    fastbp.save(tmp_path / "m.npz", net, p, metadata={1: (2, 3), "n": 10 ** 50})
    assert fastbp.io.load_with_metadata(tmp_path / "m.npz")[2] == {"1": [2, 3], "n": 10 ** 50}


def test_header_claiming_a_huge_shape_rejected_before_allocating(tmp_path):
    theta = NETS[0].init(seed=0).flat
    entries = _model_entries(theta=theta)
    entries[0] = ("theta.npy", _npy_header("<f8", (2 ** 40,)) + theta.tobytes())
    path = _archive(tmp_path / "m.npz", entries)
    with pytest.raises(ModelFileError, match=r"m\.npz: 1099511627776 parameters stored, the "
                                             r"network \[4, 8, 3\] needs 67"):
        fastbp.load(path)


def test_zip_bomb_rejected_from_declared_sizes(tmp_path, monkeypatch):
    """2 MB on disk, 2 GiB deflated, with metadata consistent with it: refused from the
    zip directory, before any entry is opened or inflated."""
    n = 1 << 28  # float64 parameters: 2 GiB
    net = fastbp.Network([n, 1], "identity", "sse", bias=False)
    fields = _fields(net=net, theta=np.zeros(1), n_params=n, sha256="0" * 64)
    header = _npy_header("<f8", (n,))
    # Each MiB of zeros deflated on its own (a full flush resets the compressor), so the
    # stream is one small piece repeated: the file costs milliseconds to build.
    def piece(data):
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)

    mib = bytes(1 << 20)
    crc = zlib.crc32(header)
    for _ in range(n * 8 >> 20):
        crc = zlib.crc32(mib, crc)
    deflated = piece(header) + piece(mib) * (n * 8 >> 20) + b"\x03\x00"
    meta = _json_npy(json.dumps(fields))
    path = _raw_zip(tmp_path / "bomb.npz", [
        ("theta.npy", zipfile.ZIP_DEFLATED, crc, deflated, len(header) + n * 8),
        ("meta.npy", zipfile.ZIP_STORED, zlib.crc32(meta), meta, len(meta))])
    assert path.stat().st_size < 3_000_000
    with zipfile.ZipFile(path) as z:  # a well-formed archive, as declared
        assert z.getinfo("theta.npy").file_size == len(header) + 8 * n

    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: opened.append(name) or real_open(
                            self, name, *a, **k))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ModelFileError) as info:
            fastbp.load(path)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes allocated"
    assert elapsed < 2.0
    assert opened == []
    assert re.match(r".*bomb\.npz: .*theta\.npy is compressed", str(info.value))


def test_compressed_model_file_rejected(tmp_path):
    path = _archive(tmp_path / "m.npz", _model_entries(), zipfile.ZIP_DEFLATED)
    with pytest.raises(ModelFileError, match=r"m\.npz: .*compressed.*uncompressed"):
        fastbp.load(path)


# ---------------------------------------------------------------------- checksum


@pytest.mark.parametrize("change", [
    {"activations": ["tanh", "sigmoid"]},
    {"sizes": [66, 1], "activations": ["sigmoid"], "bias": [True]},  # 66 + 1: 67 too
    {"l2": 0.5},
    {"reduction": "sum"},
], ids=["activations", "sizes-66-1", "l2", "reduction"])
def test_consistently_altered_network_rejected(tmp_path, change):
    path = _saved(tmp_path)
    meta = _meta(path)
    meta["network"].update(change)
    fastbp.Network.from_dict(meta["network"])  # a valid network of 67 parameters
    _rewrite(path, meta=meta)
    with pytest.raises(ModelFileError, match=r"m\.npz: contents do not match their checksum"):
        fastbp.load(path)


def test_altered_user_metadata_rejected(tmp_path):
    net = NETS[0]
    path = tmp_path / "m.npz"
    for key, value in (("metadata", {"classes": ["c", "b", "a"]}),
                       ("fastbp_version", "9.9")):
        fastbp.save(path, net, net.init(seed=0), metadata={"classes": ["a", "b", "c"]})
        meta = _meta(path)
        meta[key] = value
        _rewrite(path, meta=meta)
        with pytest.raises(ModelFileError, match="checksum"):
            fastbp.load(path)


def test_checksum_is_the_documented_one(tmp_path):
    """A file made from the format's description alone loads: the checksum is the
    canonical JSON of every field but sha256, a NUL byte, then the parameter bytes."""
    net = NETS[2]
    theta = net.init(seed=4).flat
    fields = _fields(net=net, theta=theta, metadata={"é": [1.5, None, True]})
    path = _archive(tmp_path / "m.npz", _model_entries(_signed(fields, theta), theta))
    net2, p2, extra = fastbp.io.load_with_metadata(path)
    assert net2 == net and p2 == net.init(seed=4) and extra == {"é": [1.5, None, True]}
    saved = tmp_path / "s.npz"
    fastbp.save(saved, net, net.init(seed=4), metadata=extra)
    assert _meta(saved) == _signed(dict(fields, fastbp_version=fastbp.__version__), theta)


def _write_version_1(path, net, params, metadata=None):
    """A model file as fastbp's version 1 writer made it: checksum of theta alone."""
    theta = params.flat
    meta = {"format": "fastbp-model", "format_version": 1, "fastbp_version": "0.1.0",
            "network": net.to_dict(), "n_params": int(theta.size), "dtype": theta.dtype.name,
            "sha256": hashlib.sha256(theta.tobytes()).hexdigest(), "metadata": metadata}
    meta_bytes = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), np.uint8)
    np.savez(path, theta=theta, meta=meta_bytes)


@pytest.mark.parametrize("net", NETS, ids=repr)
def test_version_1_files_still_load(tmp_path, net):
    assert FORMAT_VERSION == 2
    path = tmp_path / "v1.npz"
    p = net.init(seed=5)
    _write_version_1(path, net, p, metadata={"features": ["a", "b"]})
    net2, p2, extra = fastbp.io.load_with_metadata(path)
    assert net2 == net and p2 == p and extra == {"features": ["a", "b"]}
    # its checksum still guards its parameters
    _shift_first_weight(path)
    with pytest.raises(ModelFileError, match="v1.npz: parameters do not match their checksum"):
        fastbp.load(path)


def test_version_2_file_relabelled_version_1_rejected(tmp_path):
    path = _saved(tmp_path)
    meta = _meta(path)
    meta["format_version"] = 1
    _rewrite(path, meta=meta)
    with pytest.raises(ModelFileError, match="checksum"):
        fastbp.load(path)


# ---------------------------------------------------------------------- destination


def test_save_rejects_an_empty_path_or_a_directory_before_any_work(tmp_path, monkeypatch):
    net, p = NETS[0], NETS[0].init(seed=0)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    def never(*args, **kwargs):
        raise AssertionError("save went on to write")

    monkeypatch.setattr(np, "savez", never)
    with pytest.raises(ValueError, match=r"^path: empty path"):
        fastbp.save("", net, p)
    with pytest.raises(ValueError, match=r"^path '.*work': is a directory"):
        fastbp.save(work, net, p)
    with pytest.raises(ValueError, match=r"is a directory"):
        fastbp.save("sub" + os.sep, net, p)
    with pytest.raises(FileNotFoundError, match=r"path 'nope/m.npz': no such directory"):
        fastbp.save("nope/m.npz", net, p)
    assert os.listdir(tmp_path) == ["work"] and os.listdir(work) == []
    assert check_destination(work / "m.npz") == str(work / "m.npz")
    with pytest.raises(ValueError, match=r"^--save: empty path"):
        check_destination("", "--save")
    with pytest.raises(TypeError, match=r"^path: expected a file path"):
        check_destination(3)


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32",
                    reason="symbolic links")
def test_save_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    net = NETS[0]
    real = tmp_path / "models"
    real.mkdir()
    target = real / "m.npz"
    fastbp.save(target, net, net.init(seed=0))
    os.chmod(target, 0o640)
    link = tmp_path / "current.npz"
    os.symlink(target, link)
    fastbp.save(link, net, net.init(seed=1))
    assert os.path.islink(link) and os.readlink(link) == str(target)
    assert fastbp.load(link)[1] == net.init(seed=1)
    assert fastbp.load(target)[1] == net.init(seed=1)
    assert os.stat(target).st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ["current.npz", "models"]
    assert os.listdir(real) == ["m.npz"]  # the temporary file was in the target's folder

    # a chain of links, relative: the last target is written
    chain = tmp_path / "chain.npz"
    os.symlink("current.npz", chain)
    fastbp.save(chain, net, net.init(seed=2))
    assert os.path.islink(chain) and os.path.islink(link)
    assert fastbp.load(target)[1] == net.init(seed=2)

    # dangling, its target's folder there: the target is created
    dangling = tmp_path / "next.npz"
    os.symlink(real / "new.npz", dangling)
    fastbp.save(dangling, net, net.init(seed=3))
    assert os.path.islink(dangling)
    assert fastbp.load(real / "new.npz")[1] == net.init(seed=3)

    # dangling into a missing folder, or a loop: refused, naming the path, nothing written
    lost = tmp_path / "lost.npz"
    os.symlink(tmp_path / "nowhere" / "m.npz", lost)
    with pytest.raises(ValueError, match=r"^path '.*lost\.npz': a dangling symbolic link"):
        fastbp.save(lost, net, net.init(seed=0))
    loop = tmp_path / "loop.npz"
    os.symlink(loop, loop)
    with pytest.raises(ValueError, match=r"^path '.*loop\.npz': a symbolic link that does not"):
        fastbp.save(loop, net, net.init(seed=0))
    assert os.path.islink(lost) and os.path.islink(loop)
    assert not (tmp_path / "nowhere").exists()

    # a link to a directory or to a FIFO is refused as they are
    dir_link = tmp_path / "dir.npz"
    os.symlink(real, dir_link)
    with pytest.raises(ValueError, match="is a directory"):
        fastbp.save(dir_link, net, net.init(seed=0))
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        fifo_link = tmp_path / "fifo.npz"
        os.symlink(fifo, fifo_link)
        with pytest.raises(ValueError, match="is a FIFO"):
            fastbp.save(fifo_link, net, net.init(seed=0))
        assert os.path.islink(fifo_link)
    assert sorted(os.listdir(real)) == ["m.npz", "new.npz"]


# ---------------------------------------------------------------------- more crafted files


def _case_entries(entries_of):
    def make(path):
        return _archive(path, entries_of(_model_entries()))
    return make


def _case_theta(theta_bytes_of, fields_of=None):
    """A file whose theta entry is replaced (signed over its data when asked)."""
    def make(path):
        theta = NETS[0].init(seed=0).flat
        fields = _signed(_fields(theta=theta), theta)
        if fields_of is not None:
            fields = fields_of(theta)
        return _archive(path, [("theta.npy", theta_bytes_of(theta)),
                               ("meta.npy", _json_npy(json.dumps(fields)))])
    return make


def _case_fields(change, sign=True):
    """A file whose metadata fields are changed by ``change`` (then re-signed)."""
    def make(path):
        theta = NETS[0].init(seed=0).flat
        fields = _fields(theta=theta)
        change(fields)
        return _archive(path, _model_entries(_signed(fields, theta) if sign else fields, theta))
    return make


def _case_meta_text(text_of):
    def make(path):
        theta = NETS[0].init(seed=0).flat
        text = json.dumps(_signed(_fields(theta=theta), theta))
        return _archive(path, [("theta.npy", _npy(theta)),
                               ("meta.npy", _json_npy(text_of(text)))])
    return make


def _case_bytes(edit):
    """A file written by save, then edited byte by byte."""
    def make(path):
        fastbp.save(path, NETS[0], NETS[0].init(seed=0))
        data = bytearray(path.read_bytes())
        edit(data)
        path.write_bytes(bytes(data))
        return path
    return make


def _set(data, at, fmt, value):
    struct.pack_into(fmt, data, at, value)


def _encrypted(data):
    for sig, flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        _set(data, _record(data, sig, b"theta.npy") + flags, "<H", 1)


def _method(method):
    def edit(data):
        for sig, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
            _set(data, _record(data, sig, b"theta.npy") + at, "<H", method)
    return edit


def _version_needed(data):
    for sig, at in ((b"PK\x03\x04", 4), (b"PK\x01\x02", 6)):
        _set(data, _record(data, sig, b"theta.npy") + at, "<H", 99)


def _beyond_the_file(data):
    cd = _record(data, b"PK\x01\x02", b"theta.npy")
    _set(data, cd + 20, "<L", 10 ** 9)
    _set(data, cd + 24, "<L", 10 ** 9)


def _entry_count(count):
    def edit(data):
        _set(data, len(data) - 22 + 8, "<H", count)
        _set(data, len(data) - 22 + 10, "<H", count)
    return edit


def _directory_size(data):
    _set(data, len(data) - 22 + 12, "<L", 10 ** 8)


def _zip64_record_claiming_many(data):
    """A zip64 end record (and its locator) before the end record, claiming 10^6
    entries: zipfile would go by it."""
    end = len(data) - 22
    cd_size, cd_offset = struct.unpack_from("<2L", data, end + 12)
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 10 ** 6, 10 ** 6,
                         cd_size, cd_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1)
    data[end:end] = record + locator


def _local_name(data):
    at = _record(data, b"PK\x03\x04", b"theta.npy")
    data[at + 30:at + 39] = b"theta.npx"


def _huge_widths(fields):
    fields["network"]["sizes"] = [10 ** 30, 1]
    fields["network"]["activations"] = ["sigmoid"]
    fields["network"]["bias"] = [True]


def _duplicate_key(text):
    return text.replace('{"format"', '{"dtype": "float32", "format"', 1)


CRAFTED = {
    # the zip archive
    "empty-archive": lambda path: _archive(path, []),
    "duplicate-entries": _case_entries(lambda e: e + [e[0]]),
    "same-name-twice": _case_entries(lambda e: [e[1], e[1]]),
    "traversal-name": _case_entries(lambda e: [("../theta.npy", e[0][1]), e[1]]),
    "entry-in-a-folder": _case_entries(lambda e: [("sub/theta.npy", e[0][1]), e[1]]),
    "no-npy-suffix": _case_entries(lambda e: [("theta", e[0][1]), ("meta", e[1][1])]),
    "encrypted-entry": _case_bytes(_encrypted),
    "bzip2-entry": lambda path: _archive(path, _model_entries(), zipfile.ZIP_BZIP2),
    "unknown-method": _case_bytes(_method(99)),
    "version-needed-9.9": _case_bytes(_version_needed),
    "sizes-beyond-the-file": _case_bytes(_beyond_the_file),
    "end-record-claims-65535-entries": _case_bytes(_entry_count(0xFFFF)),
    "end-record-claims-a-huge-directory": _case_bytes(_directory_size),
    "zip64-record-claims-many-entries": _case_bytes(_zip64_record_claiming_many),
    "local-name-differs": _case_bytes(_local_name),
    # the parameter array's header and data
    "negative-dimension": _case_theta(lambda t: _npy_header("<f8", (-67,)) + t.tobytes()),
    "absurd-dimension-count": _case_theta(lambda t: _npy_header("<f8", (1,) * 1000)
                                          + t.tobytes()),
    "scalar-shape": _case_theta(lambda t: _npy_header("<f8", ()) + t.tobytes()),
    "2-d-shape": _case_theta(lambda t: _npy(t.reshape(67, 1))),
    "fortran-order": _case_theta(lambda t: _npy_header("<f8", (67,), fortran=True)
                                 + t.tobytes()),
    "object-dtype": _case_theta(lambda t: _npy(t.astype(object), allow_pickle=True)),
    "structured-dtype": _case_theta(lambda t: _npy(t.view([("w", "<f8")]))),
    "int64-dtype": _case_theta(lambda t: _npy(t.view(np.int64)),
                               lambda t: _signed(_fields(theta=t), t)),
    "big-endian": _case_theta(lambda t: _npy(t.astype(">f8")),
                              lambda t: _signed(_fields(theta=t), t.astype(">f8"))),
    "trailing-bytes": _case_theta(lambda t: _npy(t) + b"\0" * 8),
    "header-length-2-gib": _case_theta(lambda t: b"\x93NUMPY\x02\x00"
                                       + struct.pack("<L", 1 << 31) + t.tobytes()),
    "header-not-a-dict": _case_theta(lambda t: b"\x93NUMPY\x01\x00" + struct.pack("<H", 64)
                                     + b"[" * 63 + b"\n" + t.tobytes()),
    "npy-version-9": _case_theta(lambda t: b"\x93NUMPY\x09\x00" + _npy(t)[8:]),
    "not-npy": _case_theta(lambda t: t.tobytes()),
    "nan-with-correct-checksum": _case_theta(
        lambda t: _npy(np.where(np.arange(t.size) == 0, np.nan, t)),
        lambda t: _signed(_fields(theta=t), np.where(np.arange(t.size) == 0, np.nan, t))),
    # the metadata entry
    "json-list": _case_meta_text(lambda text: "[" + text + "]"),
    "json-string": _case_meta_text(json.dumps),
    "non-utf8": _case_meta_text(lambda text: text.encode().replace(b"fastbp-model",
                                                                  b"fastbp-\xff\xfe")),
    "duplicate-key": _case_meta_text(_duplicate_key),
    "unterminated-string": _case_meta_text(lambda text: text[:-1] + '"' + "[" * 1000),
    "meta-float64": lambda path: _archive(path, [_model_entries()[0],
                                                 ("meta.npy", _npy(np.zeros(8)))]),
    "meta-2-d": lambda path: _archive(path, [
        _model_entries()[0],
        ("meta.npy", _npy(np.frombuffer(b'{"a": 1}', np.uint8).reshape(2, 4)))]),
    "meta-declares-2**40-bytes": lambda path: _archive(path, [
        _model_entries()[0], ("meta.npy", _npy_header("|u1", (2 ** 40,)) + b"{}")]),
    "meta-over-1-mib": _case_fields(lambda f: f.update(metadata={"s": "x" * MAX_META_BYTES})),
    "unknown-field": _case_fields(lambda f: f.update(extra=1)),
    "missing-field": _case_fields(lambda f: f.pop("fastbp_version")),
    "format-version-true": _case_fields(lambda f: f.update(format_version=True)),
    "n-params-a-string": _case_fields(lambda f: f.update(n_params="67")),
    "sha256-a-number": _case_fields(lambda f: f.update(sha256=5), sign=False),
    "metadata-a-list": _case_fields(lambda f: f.update(metadata=[1])),
    "network-null": _case_fields(lambda f: f.update(network=None)),
    "network-huge-widths": _case_fields(_huge_widths),
    "network-300000-layers": _case_fields(lambda f: f["network"].update(
        sizes=[1] * 300_001, activations="identity", loss="sse", bias=True)),
    "network-infinite-l2": _case_meta_text(lambda text: text.replace('"l2": 0.0',
                                                                     '"l2": 1e999')),
    "dtype-float16": _case_fields(lambda f: f.update(dtype="float16")),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_file_rejected_naming_it(tmp_path, case):
    path = CRAFTED[case](tmp_path / "crafted.npz")
    with pytest.raises(ModelFileError, match=r"^.*crafted\.npz: ") as info:
        fastbp.load(path)
    assert "\n" not in str(info.value)


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


def test_poisson_network_round_trip(tmp_path):
    """An exp output with the Poisson loss saves and loads like any network."""
    net = fastbp.Network([3, 4, 2], ["tanh", "exp"], "poisson", l2=0.1)
    p = net.init(seed=0)
    fastbp.save(tmp_path / "m.npz", net, p)
    back, q = fastbp.load(tmp_path / "m.npz")
    assert back == net and np.array_equal(q.flat, p.flat)
