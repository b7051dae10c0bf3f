"""Time fastbp.dask against the single-machine call: one gradient and one
training step, for 1 and 2 worker processes, on C3- and C4-sized networks.

    python asv_bench/dask_scaling.py [--rows 100000 1000000] [--repeat 3] [--json out.json]

For each workload and N: the single-machine ``Network.loss_and_grad`` (numba's
threads: every core), ``fastbp.dask.chunked_loss_and_grad`` (the same chunks
one after another in this process), then on a ``LocalCluster`` of w worker
processes (one thread each, the data made on the workers and persisted): the
distributed gradient, and a full-batch SGD step of ``fastbp.dask.train`` with
the parameters sent as a graph key and by ``Client.scatter``.  Medians of
``--repeat`` runs after one warm-up.  The bytes a step moves are counted from
the sizes: the parameters to each worker, each chunk's partial gradient once
up the tree (the chunks - 1 additions), the total to the client.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

WORKLOADS = {
    # name: sizes, activations (fastbp/bench's C3 and C4)
    "C3": ((150, 100, 5), ("tanh", "softmax")),
    "C4": ((784, 256, 256, 10), ("relu", "relu", "softmax")),
}


def _median(fn, repeat):
    fn()  # warm-up: compilation, first transfers
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["C3", "C4"])
    ap.add_argument("--rows", nargs="+", type=int, default=[100_000, 1_000_000])
    ap.add_argument("--max-bytes", type=float, default=1.5e9,
                    help="skip an (N, workload) whose X is larger (float64)")
    ap.add_argument("--chunks", type=int, default=8, help="row chunks of X")
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    import fastbp

    rows = []
    for wl in args.workloads:
        sizes, acts = WORKLOADS[wl]
        net = fastbp.Network(list(sizes), list(acts), "cross_entropy")
        for N in args.rows:
            if N * sizes[0] * 8 > args.max_bytes:
                print(f"{wl} N={N}: X would take {N * sizes[0] * 8 / 1e9:.1f} GB, skipped")
                continue
            row = _measure(net, wl, N, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


def _measure(net, wl, N, args) -> dict:
    """One (workload, N): the single-machine, chunked and distributed times."""
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    import fastbp.dask as fd

    sizes = net.sizes
    p = net.init(seed=0)
    c = -(-N // args.chunks)
    rng = da.random.default_rng(0)
    Xd = rng.standard_normal((N, sizes[0]), chunks=(c, -1))
    yd = rng.integers(0, sizes[-1], N, chunks=c)
    X, y = Xd.compute(scheduler="threads"), yd.compute(scheduler="threads")
    row = {"workload": wl, "N": N, "chunks": args.chunks, "n_params": net.n_params}
    row["single"] = _median(lambda: net.loss_and_grad(p, X, y), args.repeat)
    row["chunked_local"] = _median(lambda: fd.chunked_loss_and_grad(net, p, X, y, c),
                                   args.repeat)
    steps = 3
    for w in args.workers:
        with LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                          dashboard_address=":0", silence_logs=40) as cl, Client(cl) as client:
            Xp, yp = client.persist([Xd, yd])
            wait([Xp, yp])
            row[f"grad_{w}w"] = _median(
                lambda Xp=Xp, yp=yp: fd.loss_and_grad(net, p, Xp, yp, client=client),
                args.repeat)
            for send in ("graph", "scatter"):
                row[f"step_{send}_{w}w"] = _median(
                    lambda send=send, Xp=Xp, yp=yp: fd.train(
                        net, p, Xp, yp, epochs=steps, lr=0.01, client=client, send_params=send),
                    args.repeat) / steps
        # the parameters to each worker, each chunk's partial gradient once
        row[f"bytes_per_step_{w}w"] = net.n_params * 8 * (w + args.chunks)
    return row


if __name__ == "__main__":
    main()
