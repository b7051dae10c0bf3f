"""Saving and loading a trained network: ``fastbp.save`` and ``fastbp.load``.

File format (version 1): a NumPy ``.npz`` archive (a zip file) with exactly two
entries, both plain arrays (loading never unpickles anything):

- ``theta``: the flat parameter vector (``Params.flat``), float32 or float64,
  in the layout of ``fastbp.params``.
- ``meta``: UTF-8 JSON bytes (a uint8 array) of the object::

      {"format": "fastbp-model", "format_version": 1,
       "fastbp_version": "...", "network": Network.to_dict(),
       "n_params": int, "dtype": "float64", "sha256": hex digest of theta's bytes,
       "metadata": the caller's JSON object or null}

A reader accepts every version up to its own and rejects newer ones, so a file
never loads into a program that would misread it.  Writes are atomic: the
archive is written to a temporary file in the target's directory, flushed to
disk, then renamed over the target, so a crash leaves either the old file or
the new one, never a truncated mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

from .network import Network
from .params import Params

__all__ = ["FORMAT_VERSION", "ModelFileError", "load", "load_with_metadata", "save"]

FORMAT = "fastbp-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be loaded: corrupt, truncated, altered or too new."""


def save(path, net: Network, params: Params, *, metadata: dict | None = None) -> None:
    """Write ``net`` and ``params`` to ``path`` (an .npz file), atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, written exactly as named (no suffix added); an existing file
        is replaced only once the new one is complete on disk.
    net : Network
    params : Params
        Parameters of ``net`` (stored in the network's dtype).
    metadata : dict, optional
        Extra JSON-able data kept with the model (feature and class names, say);
        read back by ``load_with_metadata``.
    """
    if not isinstance(net, Network):
        raise TypeError(f"net: expected fastbp.Network, got {type(net).__name__}")
    theta = net.check_params(params)
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata: expected a dict, got {type(metadata).__name__}")
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as e:
            raise TypeError(f"metadata: not JSON-serializable ({e})") from None
    path = os.fspath(path)
    from . import __version__

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastbp_version": __version__,
        "network": net.to_dict(),
        "n_params": int(theta.size),
        "dtype": theta.dtype.name,
        "sha256": hashlib.sha256(theta.tobytes()).hexdigest(),
        "metadata": metadata,
    }
    meta_bytes = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), np.uint8)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        # mkstemp creates the file 0600: give it the old file's mode, else rw-r--r--
        mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, theta=theta, meta=meta_bytes)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def load(path) -> tuple[Network, Params]:
    """Read a model written by ``save``, validating everything.

    Returns
    -------
    (Network, Params)

    Raises
    ------
    See ``load_with_metadata``.
    """
    net, params, _ = load_with_metadata(path)
    return net, params


def load_with_metadata(path) -> tuple[Network, Params, dict | None]:
    """``load``, plus the ``metadata`` dict given to ``save`` (None if none was).

    Returns
    -------
    (Network, Params, dict or None)

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ModelFileError (a ValueError)
        The file is not a fastbp model, is corrupt or truncated, its parameters do
        not match its network or its checksum, or it was written in a newer format
        version than this fastbp reads.  The message names the file and the problem.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelFileError(f"{path}: is a directory, not a model file")

    def fail(problem):
        return ModelFileError(f"{path}: {problem}")

    try:
        with np.load(path, allow_pickle=False) as archive:
            names = sorted(archive.files)
            if names != ["meta", "theta"]:
                raise fail(f"not a fastbp model file (entries {names}, expected "
                           "['meta', 'theta'])")
            meta_bytes = archive["meta"]
            theta = archive["theta"]
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            KeyError) as e:
        raise fail(f"not a readable fastbp model file (corrupt or truncated: {e})") from None

    if meta_bytes.dtype != np.uint8 or meta_bytes.ndim != 1:
        raise fail("corrupt metadata (expected UTF-8 JSON bytes)")
    try:
        meta = json.loads(meta_bytes.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(f"corrupt metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise fail("not a fastbp model file (metadata lacks format 'fastbp-model')")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise fail(f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise fail(f"written in model format version {version}, newer than this fastbp "
                   f"reads ({FORMAT_VERSION}); upgrade fastbp to load it")
    try:
        net = Network.from_dict(meta["network"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise fail(f"invalid network description ({e})") from None

    if theta.ndim != 1 or theta.dtype not in (np.float32, np.float64):
        raise fail(f"parameters must be a 1-D float32/float64 array, got {theta.dtype} "
                   f"of shape {theta.shape}")
    if theta.dtype != net.dtype or meta.get("dtype") != net.dtype.name:
        raise fail(f"parameters are {theta.dtype} but the network is {net.dtype}")
    if theta.size != net.n_params or meta.get("n_params") != net.n_params:
        raise fail(f"{theta.size} parameters stored, the network {list(net.sizes)} needs "
                   f"{net.n_params}")
    if meta.get("sha256") != hashlib.sha256(theta.tobytes()).hexdigest():
        raise fail("parameters do not match their checksum (the file was altered)")
    if not np.isfinite(theta).all():
        raise fail("parameters contain NaN or inf")
    extra = meta.get("metadata")
    if extra is not None and not isinstance(extra, dict):
        raise fail("corrupt metadata (the user metadata is not an object)")
    return net, Params(net.sizes, net.bias, np.ascontiguousarray(theta)), extra


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be
    opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
