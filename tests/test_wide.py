"""Networks wide and deep enough to cross every blocking of the micro-kernel
products: KC (the sum index), MC (rows of A), the weight-gradient tasks'
blocks, the phase-1 blocks of examples, and KC blocks of examples in the
weight gradients, against the reference; the same bits from both drivers and
for any thread count; and the other vector widths' code, forced."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest
from test_kernels import check

import fastbp
from fastbp import Network
from fastbp._core import kernels
from fastbp._core import microkernel as mk

# n_in 300 > KC = 256 (two blocks of the sum), 161 > 2 MC rows (f64), 53 and
# 61 outputs: edges of MR and NR; N = 301: two KC blocks of examples, and a
# last phase-1 block that is not full; 400 x 300 weights: more than
# kernels.PACK_PARALLEL, so the parallel drivers pack the weights in parallel.
WIDE = [([300, 161, 53, 7], 301), ([40, 61, 1], 130), ([1, 20, 300], 5), ([400, 300, 7], 64)]


@pytest.fixture(params=["serial", "parallel"])
def path(request, monkeypatch):
    from fastbp._core import plan as core_plan

    monkeypatch.setattr(core_plan, "POLICY", "threshold")
    monkeypatch.setattr(core_plan, "SERIAL_BELOW", 10**18 if request.param == "serial" else 0)
    return request.param


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sizes, N", WIDE)
def test_wide_layers_match_reference(sizes, N, dtype, path):
    hidden = ["tanh", "relu", "sigmoid"][:len(sizes) - 2]
    check(dict(sizes=sizes, activations=hidden + ["softmax"], loss="cross_entropy",
               bias=True, reduction="mean", l2=0.01, N=N, labels=True, seed=1), dtype, path=path)
    check(dict(sizes=sizes, activations=hidden + ["identity"], loss="sse",
               bias=[k % 2 == 0 for k in range(len(sizes) - 1)], reduction="sum", l2=0.0,
               N=N, labels=False, seed=2), dtype, path=path)


def _digest(net, p, X, Y):
    J, g, dX = net.loss_and_grad(p, X, Y, input_grad=True)
    return (np.float64(J).tobytes() + g.flat.tobytes() + dX.tobytes()
            + net.forward(p, X).tobytes())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_wide_bits_do_not_depend_on_driver_or_threads(dtype, monkeypatch):
    """The serial driver, the parallel one on 1 and on 2 threads (which cut the
    batch into blocks of other sizes, ``_block_rows``): the same bits."""
    from fastbp._core import plan as core_plan

    net = Network([300, 161, 53, 7], ["tanh", "relu", "softmax"], "cross_entropy",
                  l2=1e-3, dtype=dtype)
    p = net.init(3)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(301, 300))
    Y = rng.integers(0, 7, 301)
    monkeypatch.setattr(core_plan, "POLICY", "threshold")
    monkeypatch.setattr(core_plan, "SERIAL_BELOW", 10**18)
    serial = _digest(net, p, X, Y)
    assert net.plan.last_driver == "serial"
    monkeypatch.setattr(core_plan, "SERIAL_BELOW", 0)
    runs = []
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            runs.append(_digest(net, p, X, Y))
            assert net.plan.last_driver == "parallel"
    finally:
        numba.set_num_threads(before)
    assert runs[0] == serial and runs[1] == serial


def test_block_rows():
    """Phase 1's blocks: multiples of NR, at least BLOCK_MIN, about BLOCK_MAX at
    most, two per thread when there are several threads."""
    rows = kernels._block_rows
    NR = mk.blocks(np.float64)[1]
    scratch = np.zeros(1)

    def up(x):
        return -(-x // NR) * NR

    assert rows(scratch, 1, 1) == up(kernels.BLOCK_MIN)
    assert rows(scratch, 1024, 1) == up(512)
    assert rows(scratch, 1024, 2) == up(256)
    assert rows(scratch, 1024, 16) == up(kernels.BLOCK_MIN)
    assert rows(scratch, 10_000, 2) == up(-(-10_000 // 20))
    # the drivers' scratch does not depend on the cut (the blocks read their
    # examples in place: no packing buffer per block)
    layout = Network([300, 161, 7], ["tanh", "softmax"], "cross_entropy").plan.layout
    p0, p_rows, ch = (int(layout[0, c]) for c in (kernels.P0, kernels.P_ROWS, kernels.CHUNK))
    for N in (1, 47, 48, 301, 1024, 10_001):
        assert kernels.scratch_size(layout, N, grad=False) == p0
    # one chunk's panels for a batch of one chunk, two buffers beyond it: the
    # scratch stops growing with N but for a counter pair per chunk
    assert kernels.scratch_size(layout, ch) == p0 + 16 + ch * p_rows
    assert kernels.scratch_size(layout, 2 * ch) == p0 + 16 + 2 * ch * p_rows
    assert kernels.scratch_size(layout, 40 * ch) == p0 + 80 + 2 * ch * p_rows


def _fresh_network(monkeypatch, chunk_bytes, *args, **kwargs):
    """A Network whose plan is made with ``kernels.CHUNK_BYTES = chunk_bytes``."""
    from fastbp._core import plan as core_plan

    monkeypatch.setattr(kernels, "CHUNK_BYTES", chunk_bytes)
    with core_plan._plans_lock:
        core_plan._plans.clear()
    return Network(*args, **kwargs)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bits_do_not_depend_on_the_chunks(dtype, monkeypatch):
    """The weight gradients' chunks of examples (one KC block each, or the
    whole batch in one), both drivers, 1 and 2 threads: the same bits, and
    no driver writes past ``scratch_size``."""
    from fastbp._core import plan as core_plan

    args = ([300, 161, 53, 7], ["tanh", "relu", "softmax"], "cross_entropy")
    N = 1100  # over four chunks of 256 examples, the last one short
    rng = np.random.default_rng(5)
    X = rng.normal(size=(N, 300))
    Y = rng.integers(0, 7, N)
    monkeypatch.setattr(core_plan, "POLICY", "threshold")
    digests, chunks = set(), set()
    before = numba.get_num_threads()
    try:
        for chunk_bytes in (1, 10**12):
            net = _fresh_network(monkeypatch, chunk_bytes, *args, l2=1e-3, dtype=dtype)
            p = net.init(3)
            layout = net.plan.layout
            chunks.add(int(layout[0, kernels.CHUNK]))
            for serial_below, threads in ((10**18, 1), (0, 1), (0, 2)):
                monkeypatch.setattr(core_plan, "SERIAL_BELOW", serial_below)
                numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
                digests.add(_digest(net, p, X, Y))
            # the drivers on a scratch longer than scratch_size: its tail untouched
            plan = net.plan
            a = list(plan._batch_args(p.flat, X.astype(dtype), np.eye(7, dtype=dtype)[Y], N))
            n = kernels.scratch_size(layout, N)
            for driver, threads in ((kernels.loss_grad_serial, 1),
                                    (kernels.loss_grad_parallel, 2)):
                long = np.full(n + 64, 7.0, dtype)
                a[-2], a[-1] = long, kernels.worker_table(dtype, threads)
                driver(*a)
                assert np.all(long[n:] == 7.0)
    finally:
        numba.set_num_threads(before)
        with core_plan._plans_lock:
            core_plan._plans.clear()
    assert len(chunks) == 2 and min(chunks) == mk.blocks(dtype)[2]
    assert len(digests) == 1


_OTHER_WIDTH = textwrap.dedent("""
    import sys
    import numpy as np
    from fastbp import Network, reference
    from fastbp._core import microkernel as mk
    assert mk.VECTOR_BITS == {bits} and not mk.CACHE
    rng = np.random.default_rng(0)
    for dtype, rtol in (("float64", 1e-10), ("float32", 1e-4)):
        net = Network([300, 61, 7], ["tanh", "softmax"], "cross_entropy", l2=1e-3, dtype=dtype)
        net64 = Network([300, 61, 7], ["tanh", "softmax"], "cross_entropy", l2=1e-3)
        p = net.init(1)
        X = rng.normal(size=(97, 300)).astype(dtype)
        Y = rng.integers(0, 7, 97)
        J, g, dX = net.loss_and_grad(p, X, Y, input_grad=True)
        J_ref, g_ref, dX_ref = reference.loss_and_grad(net64, p.astype(np.float64),
                                                       X.astype(np.float64), Y, input_grad=True)
        scale = np.abs(g_ref.flat).max()
        np.testing.assert_allclose(J, J_ref, rtol=rtol)
        np.testing.assert_allclose(g.flat, g_ref.flat, rtol=rtol, atol=rtol * scale)
        np.testing.assert_allclose(dX, dX_ref, rtol=rtol, atol=rtol * np.abs(dX_ref).max())
        np.save(sys.argv[1] + dtype + ".npy", np.concatenate([[J], g.flat, dX.ravel()]))
""")


def test_other_vector_widths(tmp_path):
    """The kernels compiled for the other vector widths (FASTBP_VECTOR_BITS: the
    128-bit path, and 512 with its own block table, as on an AVX-512 host)
    against the reference, in subprocesses; their products are the same chains
    as this host's, so the results agree with this host's to rounding of the
    elementwise steps."""
    env = dict(os.environ, PYTHONPATH=str(Path(fastbp.__file__).parent.parent))
    runs = {}
    for bits in (128, 256, 512):
        if bits != mk.VECTOR_BITS:
            runs[bits] = subprocess.Popen(
                [sys.executable, "-c", _OTHER_WIDTH.format(bits=bits), str(tmp_path / f"w{bits}")],
                env=dict(env, FASTBP_VECTOR_BITS=str(bits)), stderr=subprocess.PIPE, text=True)
    rng = np.random.default_rng(0)
    here = {}
    for dtype in ("float64", "float32"):
        net = Network([300, 61, 7], ["tanh", "softmax"], "cross_entropy", l2=1e-3, dtype=dtype)
        p = net.init(1)
        X = rng.normal(size=(97, 300)).astype(dtype)
        Y = rng.integers(0, 7, 97)
        J, g, dX = net.loss_and_grad(p, X, Y, input_grad=True)
        here[dtype] = np.concatenate([[J], g.flat, dX.ravel()])
    for bits, proc in runs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        for dtype, rtol in (("float64", 1e-12), ("float32", 1e-5)):
            got = np.load(tmp_path / f"w{bits}{dtype}.npy")
            np.testing.assert_allclose(got, here[dtype], rtol=rtol,
                                       atol=rtol * np.abs(here[dtype]).max(),
                                       err_msg=f"{bits} bits, {dtype}")
