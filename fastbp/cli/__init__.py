"""The ``fastbp`` command (also ``python -m fastbp``).

Subcommands: ``demo``, ``train``, ``predict``, ``check`` (and ``bench`` when
``fastbp.bench`` is installed).  Exit codes: 0 success, 2 usage error, 1 any
other error; an error is one line on stderr, with the traceback only under
``--debug``.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import math
import os
import sys
import time
import traceback
import warnings

import numpy as np

from .. import __version__
from .._checks import Integer, Real
from .csvdata import (
    DataError,
    class_labels,
    column_indices,
    is_numeric_column,
    numeric,
    read_table,
)

try:  # the bench subcommand wires itself in where fastbp.bench is installed
    _bench = importlib.import_module("fastbp.bench")
except ModuleNotFoundError as e:  # only its own absence is tolerated; other errors show
    if e.name != "fastbp.bench":
        raise
    _bench = None

PROG = "fastbp"


class UsageError(Exception):
    """Bad command line: exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2 raised, not exited."""

    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback on errors")
    p = _Parser(
        prog=PROG, parents=[debug],
        description="Exact backpropagation for MLPs, compiled: train, predict and check "
                    "networks from the command line.",
        epilog=f"Run '{PROG} demo' first; '{PROG} COMMAND --help' describes each command.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser(
        "demo", parents=[debug], help="train 000's iris network and check it (start here)",
        description="Train the 4-8-3 sigmoid network of 000 on the bundled iris data with "
                    "full-batch gradient descent, report loss and accuracy, check the "
                    "trained network's gradients against the NumPy reference and finite "
                    "differences, and time fastbp against the NumPy reference on the same "
                    "run.")
    d.add_argument("--epochs", type=_positive_int, default=4000,
                   help="epochs of gradient descent (default: 4000)")
    d.add_argument("--lr", type=_positive_float, default=0.2, help="learning rate (default: 0.2)")
    d.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    d.set_defaults(run=cmd_demo)

    t = sub.add_parser(
        "train", parents=[debug], help="train a network on a CSV file",
        description="Train an MLP on a CSV file with a header row: numeric feature columns "
                    "and a target (a class column, or numeric columns for regression).  "
                    "Features are standardized for training; the saved model takes raw "
                    "features (the scaling is folded into the first layer).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("data", metavar="DATA.csv", help="training data")
    t.add_argument("--target", required=True, metavar="COLUMN[,COLUMN...]",
                   help="target column: class names or labels (classification), or one or "
                        "more numeric columns (regression)")
    t.add_argument("--features", metavar="COLUMN[,COLUMN...]", default=None,
                   help="feature columns (default: every other column)")
    t.add_argument("--hidden", type=_widths, default=(16,), metavar="N[,N...]",
                   help="hidden layer widths, e.g. 8,8; 0 for none")
    t.add_argument("--activation", default="tanh", choices=("tanh", "sigmoid", "relu",
                                                              "identity"),
                   help="activation of the hidden layers")
    t.add_argument("--loss", default=None, choices=("cross_entropy", "bce", "sse", "poisson"),
                   help="cross_entropy (softmax output), bce (2 classes, one sigmoid "
                        "output), sse (regression, identity output) or poisson (counts, "
                        "exp output); default: cross_entropy for a non-numeric target, "
                        "else sse")
    t.add_argument("--l2", type=_nonnegative_float, default=0.0, help="L2 penalty lambda")
    t.add_argument("--optimizer", "--solver", dest="optimizer", default="adam",
                   choices=("sgd", "momentum", "nesterov", "adam", "lbfgs"),
                   help="adam (default), sgd, momentum, nesterov, or lbfgs (full-batch "
                        "L-BFGS, needs scipy; no validation split)")
    t.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: 0.001 for adam, else 0.01)")
    t.add_argument("--learning-rate", dest="lr_schedule", default="constant",
                   choices=("constant", "invscaling", "adaptive"),
                   help="learning-rate schedule: constant (default), invscaling "
                        "(lr / (t + 1)^power_t, t the examples seen) or adaptive (lr / 5 "
                        "when --early-stopping would stop; needs it)")
    t.add_argument("--power-t", type=_nonnegative_float, default=0.5, metavar="P",
                   help="exponent of --learning-rate invscaling (default: 0.5)")
    t.add_argument("--sample-weight", metavar="COLUMN", default=None,
                   help="a numeric column of weights >= 0 for the rows (not a feature)")
    t.add_argument("--epochs", type=_positive_int, default=200)
    t.add_argument("--batch-size", type=_nonnegative_int, default=32,
                   help="mini-batch size (0 for full batch)", metavar="N")
    t.add_argument("--validation", type=_fraction, default=None, metavar="FRACTION",
                   help="fraction of the rows held out for validation (0 for none; "
                        "default: 0.2, or 0 with lbfgs)")
    t.add_argument("--early-stopping", type=_positive_int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a lower validation loss")
    t.add_argument("--seed", type=_nonnegative_int, default=0,
                   help="seed of the initial weights, the split and the shuffling")
    t.add_argument("--no-standardize", action="store_true",
                   help="train on the raw features")
    t.add_argument("--save", metavar="MODEL.npz", default=None, help="save the trained model")
    t.add_argument("--plot", metavar="LOSS.png", default=None,
                   help="plot training and validation loss per epoch (needs matplotlib: "
                        "pip install 'fastbp[plot]')")
    t.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    t.set_defaults(run=cmd_train)

    r = sub.add_parser(
        "predict", parents=[debug], help="predict with a saved model",
        description="Predict with a model saved by 'fastbp train --save' (or fastbp.save) "
                    "for every row of a CSV file; writes a CSV (to stdout by default).  "
                    "When the file holds the target column, the accuracy (or mean squared "
                    "error) is reported on stderr.")
    r.add_argument("model", metavar="MODEL.npz")
    r.add_argument("data", metavar="DATA.csv")
    r.add_argument("--output", "-o", metavar="PREDICTIONS.csv", default=None,
                   help="write the predictions here instead of stdout")
    r.set_defaults(run=cmd_predict)

    c = sub.add_parser(
        "check", parents=[debug], help="verify the compiled gradients on a grid of networks",
        description="For a grid of small networks (every activation, loss, bias and L2 "
                    "setting), compare the compiled kernels' loss and gradients with the "
                    "NumPy reference, and the reference with finite differences; print a "
                    "pass/fail table.  Exit code 1 if any check fails.")
    c.add_argument("--tol", type=_positive_float, default=1e-7,
                   help="largest relative error accepted (default: 1e-7)")
    c.set_defaults(run=cmd_check)

    if _bench is not None:
        _bench.add_parser(sub)
    return p


def _argument(constraint, convert, kind):
    """An argparse type: the text converted by ``convert`` (a ``kind`` of
    number), then held to ``constraint`` (``fastbp._checks``): the same rule,
    and the same words, as the library's for that option."""

    def parse(text):
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            return constraint("", v)
        except (TypeError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(": ")) from None

    return parse


_positive_int = _argument(Integer(1), int, "an integer")
_nonnegative_int = _argument(Integer(0), int, "an integer")
_positive_float = _argument(Real(0.0, open_ends=("low",)), float, "a number")
_nonnegative_float = _argument(Real(0.0), float, "a number")
_fraction = _argument(Real(0.0, 1.0, open_ends=("high",)), float, "a number")


def _widths(text):
    if text.strip() == "0":
        return ()
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 8,8, got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be >= 1, got {text!r}")
    return widths


# ---------------------------------------------------------------------- main


def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv[: argv.index("--")] if "--" in argv else "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        if args.command == "bench":
            code = _bench.run(args)
        else:
            code = args.run(args)
        return 0 if code is None else int(code)
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except UsageError as e:
        if debug:
            traceback.print_exc()
        print(e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``fastbp predict ... | head``)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
        return 1
    except Exception as e:  # noqa: BLE001 - any failure: one line, or the traceback on request
        if debug:
            traceback.print_exc()
        msg = str(e) if isinstance(e, (DataError, ValueError, TypeError, OSError)) and str(e) \
            else f"{type(e).__name__}: {e}"
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------- demo


def cmd_demo(args) -> int:
    from .. import Network, gradcheck, reference, train
    from ..datasets import load_iris

    iris = load_iris()
    X, Y, labels = iris.X, iris.Y, iris.labels
    net = Network([4, 8, 3], "sigmoid", "bce")
    p0 = net.init(seed=1)
    lr, epochs = args.lr, args.epochs
    print(f"fastbp {__version__} demo: 000's {net!r}")
    print(f"  iris: {X.shape[0]} flowers, {X.shape[1]} measurements, {Y.shape[1]} species; "
          f"full-batch gradient descent, lr {lr:g}, {epochs} epochs")

    print("  loading the compiled kernels (the very first run compiles them, which takes "
          "a while; Numba caches the result)...", flush=True)
    t0 = time.perf_counter()
    train(net, p0, X, Y, lr=lr, epochs=1)
    t1 = time.perf_counter()
    print(f"  kernels ready in {t1 - t0:.1f} s")
    history = train(net, p0, X, Y, lr=lr, epochs=epochs, progress=not args.no_progress)
    t_fast = time.perf_counter() - t1
    params = history.params
    J = net.loss(params, X, Y)
    predicted = net.predict_proba(params, X).argmax(axis=1)
    acc = float(np.mean(predicted == labels))
    print(f"  trained: loss {history.loss[0]:.4f} -> {J:.4f}, training accuracy "
          f"{acc:.1%} ({round(acc * X.shape[0])}/{X.shape[0]})")

    # the same run with the NumPy reference: same updates, independent code
    t2 = time.perf_counter()
    theta = p0.copy()
    for _ in range(epochs):
        _, g = reference.loss_and_grad(net, theta, X, Y)
        theta.flat[:] -= lr * g.flat
    t_ref = time.perf_counter() - t2
    drift = float(np.max(np.abs(theta.flat - params.flat)) / np.max(np.abs(theta.flat)))

    # gradients of the trained network: kernels vs reference vs finite differences
    _, g_k = net.loss_and_grad(params, X, Y)
    _, g_r = reference.loss_and_grad(net, params, X, Y)
    kernel_err = _rel_err(g_k.flat, g_r.flat)
    fd_err = gradcheck(net, params, X, Y)
    ok = kernel_err < 1e-9 and fd_err < 1e-6 and drift < 1e-4
    print("  checks on the trained network:")
    print(f"    gradient, compiled vs NumPy reference: max relative error {kernel_err:.1e}")
    print(f"    gradient, NumPy reference vs finite differences: {fd_err:.1e}")
    print(f"    parameters trained by fastbp vs by the reference: max relative "
          f"difference {drift:.1e}")
    print(f"  time for the {epochs} epochs: fastbp {t_fast:.3f} s, NumPy reference "
          f"{t_ref:.3f} s ({t_ref / t_fast:.1f}x)")
    if not ok:
        print(f"{PROG}: error: a check failed (see above)", file=sys.stderr)
        return 1
    print("  all checks passed")
    return 0


def _rel_err(a, b):
    scale = max(float(np.max(np.abs(b))), 1e-300)
    return float(np.max(np.abs(a - b)) / scale)


# ---------------------------------------------------------------------- train


def cmd_train(args) -> int:
    from .. import Network, train
    from ..io import check_destination, save
    from ..targets import encode_classes, head_for_loss

    # everything that can fail fast fails before any training
    plt = _pyplot() if args.plot else None
    if args.save is not None:
        check_destination(args.save, "--save")
    if args.plot:
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            raise DataError(f"--plot {args.plot}: no such directory {folder}")
    lbfgs = args.optimizer == "lbfgs"
    if lbfgs and (args.validation or args.early_stopping or args.lr_schedule != "constant"):
        what = ("--validation" if args.validation else "--early-stopping"
                if args.early_stopping else "--learning-rate")
        raise UsageError(f"{PROG} train: error: {what} does not apply to --optimizer lbfgs "
                         "(full batch, no validation split)")
    if args.lr_schedule == "adaptive" and not args.early_stopping:
        raise UsageError(f"{PROG} train: error: --learning-rate adaptive needs "
                         "--early-stopping (it divides lr by 5 where that would stop)")
    table = read_table(args.data)
    targets = _names(args.target)
    t_cols = column_indices(table, targets, "--target")
    w_cols = []
    if args.sample_weight is not None:
        w_cols = column_indices(table, _names(args.sample_weight), "--sample-weight")
        if len(w_cols) != 1 or w_cols[0] in t_cols:
            raise UsageError(f"{PROG} train: error: --sample-weight names one column, not "
                             "the target")
    if args.features is None:
        f_cols = [c for c in range(len(table.header)) if c not in t_cols and c not in w_cols]
    else:
        f_cols = column_indices(table, _names(args.features), "--features")
        both = set(f_cols) & set(t_cols)
        if both:
            raise UsageError(f"{PROG} train: error: column {table.header[min(both)]!r} is "
                             "both a feature and the target")
        if set(f_cols) & set(w_cols):
            raise UsageError(f"{PROG} train: error: column {args.sample_weight!r} is both a "
                             "feature and the sample weight")
    if not f_cols:
        raise DataError(f"{table.path}: no feature columns besides the target")
    X = numeric(table, f_cols)
    weights = None
    if w_cols:
        weights = numeric(table, w_cols)[:, 0]
        with np.errstate(over="ignore"):  # a sum beyond float64 is train's error to name
            total = weights.sum()
        if (weights < 0).any() or not total > 0:
            raise DataError(f"{table.path}: --sample-weight {args.sample_weight!r} needs "
                            "weights >= 0, not all zero")

    loss = args.loss
    if loss is None:
        numeric_target = all(is_numeric_column(table, c) for c in t_cols)
        loss = "sse" if numeric_target else "cross_entropy"
    classes = None
    if loss in ("sse", "poisson"):
        Y = numeric(table, t_cols)
        if loss == "poisson" and (Y < 0).any():
            raise DataError(f"{table.path}: --loss poisson needs targets >= 0 (counts)")
        out = head_for_loss(loss, Y.shape[1])
    else:
        if len(t_cols) != 1:
            raise UsageError(f"{PROG} train: error: --loss {loss} needs one class column "
                             f"as --target, got {len(t_cols)}")
        labels, classes = class_labels(table, t_cols[0])
        if len(classes) < 2:
            raise DataError(f"{table.path}: the target {targets[0]!r} has a single class "
                            f"({classes[0]!r}); nothing to learn")
        if loss == "bce" and len(classes) != 2:
            raise DataError(f"{table.path}: --loss bce needs exactly 2 classes in "
                            f"{targets[0]!r}, found {len(classes)}; use cross_entropy")
        out = head_for_loss(loss, len(classes))
        Y = encode_classes(labels, out, np.float64)
    n_out, out_act = out.n_out, out.activation

    mu = X.mean(axis=0)
    sigma = X.std(axis=0)
    sigma[sigma == 0] = 1.0
    standardize = not args.no_standardize
    Xs = (X - mu) / sigma if standardize else X

    sizes = [X.shape[1], *args.hidden, n_out]
    acts = [args.activation] * len(args.hidden) + [out_act]
    net = Network(sizes, acts, loss, l2=args.l2)
    fraction = (0.0 if lbfgs else 0.2) if args.validation is None else args.validation
    validation = fraction if fraction > 0 else None
    if args.early_stopping and validation is None:
        raise UsageError(f"{PROG} train: error: --early-stopping needs --validation > 0")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a divergence: reported below
        options = {} if lbfgs else dict(
            lr=args.lr, batch_size=args.batch_size or None, seed=args.seed,
            validation=validation, early_stopping=args.early_stopping, progress=progress,
            lr_schedule=args.lr_schedule, power_t=args.power_t)
        history = train(net, net.init(seed=args.seed), Xs, Y, optimizer=args.optimizer,
                        epochs=args.epochs, sample_weight=weights, **options)
    if history.stop_reason == "diverged":
        lr = history_lr(args)
        raise DataError(f"training diverged: the loss became NaN or infinite at epoch "
                        f"{history.epochs}; no model written (try a smaller --lr than {lr:g})")
    params = history.params
    if standardize:
        params = _fold_standardization(net, params, mu, sigma)

    unit = "iterations" if lbfgs else "epochs"
    seconds = history.time[-1] if history.epochs else 0.0
    print(f"trained {net!r} on {X.shape[0]} rows of {table.path}: {history.epochs} {unit} "
          f"({history.stop_reason}), {seconds:.2f} s")
    final = history.loss[-1] if history.epochs else net.loss(history.params, Xs, Y,
                                                             sample_weight=weights)
    line = f"  final training loss {final:.6g}"
    if history.val_loss is not None:
        line += f", validation loss {history.val_loss[-1]:.6g}"
        if history.val_accuracy is not None:
            line += f", validation accuracy {history.val_accuracy[-1]:.1%}"
        line += f" (best epoch {history.best_epoch + 1})"
    print(line)
    if classes is not None:
        fitted = net.predict(params, X)
        truth = labels
        print(f"  accuracy on all {X.shape[0]} rows: {np.mean(fitted == truth):.1%} "
              f"(classes: {', '.join(classes)})")
    else:
        # what a regression user reads first: R^2 (pooled over the targets) and RMSE
        fitted = net.forward(params, X)
        sst = float(((Y - Y.mean(axis=0)) ** 2).sum())
        sse = float(((fitted - Y) ** 2).sum())
        r2 = 1.0 - sse / sst if sst > 0 else (1.0 if sse == 0 else 0.0)
        rmse = math.sqrt(sse / Y.size)
        print(f"  on all {X.shape[0]} rows: R^2 {r2:.4f}, RMSE {rmse:.6g}")
    if args.save is not None:
        meta = {"features": [table.header[c] for c in f_cols], "target": targets,
                "classes": classes}
        save(args.save, net, params, metadata=meta)
        print(f"  saved to {args.save}")
    if plt is not None:
        _plot(plt, history, args.plot)
        print(f"  loss curves plotted to {args.plot}")
    return 0


def history_lr(args) -> float:
    """The learning rate a training run used (``--lr`` or the optimizer's default)."""
    from ..training import DEFAULT_LR

    return args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]


def _names(text):
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise UsageError(f"{PROG}: error: empty column name in {text!r}")
    return names


def _fold_standardization(net, params, mu, sigma):
    """The same function on raw inputs: z = W ((x - mu) / sigma) + b
    = (W / sigma) x + (b - (W / sigma) mu), so W^(1) <- W^(1) / sigma (per column j)
    and b^(1) <- b^(1) - W^(1) mu with the new W^(1)."""
    p = params.copy()
    W1 = p.W[1]
    W1 /= sigma
    if p.b[1] is not None:
        p.b[1][...] -= W1 @ mu
    return p


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise DataError("--plot needs matplotlib, which is not installed "
                        "(pip install 'fastbp[plot]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot(plt, history, path):
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, history.epochs + 1)
    ax.plot(epochs, history.loss, label="training")
    if history.val_loss is not None:
        ax.plot(epochs, history.val_loss, label="validation")
        ax.axvline(history.best_epoch + 1, color="grey", linestyle=":", label="best epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------- predict


def cmd_predict(args) -> int:
    from ..io import load_with_metadata

    net, params, meta = load_with_metadata(args.model)
    table = read_table(args.data)
    meta = meta or {}
    features = meta.get("features")
    if features is not None:
        f_cols = column_indices(table, features, f"a feature of {args.model}")
    elif len(table.header) == net.sizes[0]:
        f_cols = list(range(len(table.header)))
    else:
        raise DataError(f"{table.path}: {len(table.header)} columns, but the model takes "
                        f"{net.sizes[0]} features and does not name them")
    X = numeric(table, f_cols)
    classes = meta.get("classes")
    targets = meta.get("target") or []
    out_rows = []
    if net.loss_name in ("sse", "poisson"):
        Yhat = net.predict(params, X)
        names = [f"predicted_{t}" for t in targets] if len(targets) == Yhat.shape[1] else \
            [f"output_{k}" for k in range(Yhat.shape[1])]
        header = names
        out_rows = [[repr(float(v)) for v in row] for row in Yhat]
    elif net.loss_name == "bce" and net.sizes[-1] > 1:  # one yes/no decision per output
        proba = net.predict_proba(params, X)
        decided = net.predict(params, X)
        n_L = proba.shape[1]
        header = [f"prediction_{k}" for k in range(n_L)] + [f"p_{k}" for k in range(n_L)]
        out_rows = [[str(int(v)) for v in d] + [f"{v:.6g}" for v in row]
                    for d, row in zip(decided, proba)]
    else:
        proba = net.predict_proba(params, X)
        if net.loss_name == "bce":
            proba = np.hstack([1 - proba, proba])
        k_hat = proba.argmax(axis=1)
        names = classes if classes is not None and len(classes) == proba.shape[1] else \
            [str(k) for k in range(proba.shape[1])]
        header = ["prediction"] + [f"p_{name}" for name in names]
        out_rows = [[names[k]] + [f"{v:.6g}" for v in row] for k, row in zip(k_hat, proba)]

    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as f:
            _write_csv(f, header, out_rows)
    else:
        _write_csv(sys.stdout, header, out_rows)

    if targets and all(t in table.header for t in targets):
        t_cols = column_indices(table, targets, "target")
        if net.loss_name in ("sse", "poisson"):
            mse = float(np.mean((numeric(table, t_cols) - Yhat) ** 2))
            print(f"mean squared error on {X.shape[0]} rows: {mse:.6g}", file=sys.stderr)
        elif classes is not None:
            # rows of a class the model never saw cannot be predicted right: they
            # count as wrong, and are named (the predictions are written all the same)
            truth, _, unseen = class_labels(table, t_cols[0], classes, unseen_ok=True)
            print(f"accuracy on {X.shape[0]} rows: {np.mean(truth == k_hat):.1%}",
                  file=sys.stderr)
            if unseen:
                n = int(np.sum(truth < 0))
                print(f"  {n} of them have classes not seen in training "
                      f"({', '.join(map(repr, unseen))}), counted as wrong", file=sys.stderr)
    if args.output:
        print(f"{X.shape[0]} predictions written to {args.output}", file=sys.stderr)
    return 0


def _write_csv(stream, header, rows):
    w = csv.writer(stream, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)


# ---------------------------------------------------------------------- check


def _check_grid():
    """(sizes, activations, loss, options) of the networks ``check`` verifies:
    every hidden activation with the three losses, every other valid output
    (sigmoid, tanh, relu, softmax, exp before sse; exp before poisson), and the
    bias, L2 and reduction variants."""
    grid = []
    for hidden in ("sigmoid", "tanh", "relu", "identity"):
        for out, loss in (("sigmoid", "bce"), ("softmax", "cross_entropy"),
                          ("identity", "sse")):
            grid.append(([3, 5, 4, 2], [hidden, hidden, out], loss, {}))
    grid.append(([3, 4, 2], ["tanh", "softmax"], "cross_entropy", {"l2": 0.1}))
    grid.append(([3, 2, 1], ["sigmoid", "sigmoid"], "sse",
                 {"bias": False, "reduction": "sum"}))
    grid.append(([4, 3, 3], ["relu", "sigmoid"], "bce", {"bias": [True, False], "l2": 0.05}))
    grid.append(([3, 4, 3], ["tanh", "softmax"], "sse", {"reduction": "sum"}))
    grid.append(([3, 4, 2], ["relu", "tanh"], "sse", {}))
    grid.append(([3, 4, 2], ["tanh", "relu"], "sse", {"l2": 0.01}))
    grid.append(([3, 4, 2], ["identity", "sigmoid"], "sse", {"bias": [False, True]}))
    grid.append(([3, 4, 2], ["tanh", "exp"], "poisson", {"l2": 0.01}))
    grid.append(([3, 4, 2], ["relu", "exp"], "sse", {"reduction": "sum"}))
    return grid


def cmd_check(args) -> int:
    from .. import Network, gradcheck, reference

    rng = np.random.default_rng(0)
    rows = []
    failed = 0
    for sizes, acts, loss, opts in _check_grid():
        net = Network(sizes, acts, loss, **opts)
        params = net.init(seed=len(rows))
        N = 7
        X = rng.normal(size=(N, sizes[0]))
        if loss == "cross_entropy":
            Y = rng.integers(0, sizes[-1], N)
        elif loss == "bce":
            Y = (rng.random((N, sizes[-1])) > 0.5).astype(float)
        elif loss == "poisson":
            Y = rng.poisson(1.5, size=(N, sizes[-1])).astype(float)
        else:
            Y = rng.normal(size=(N, sizes[-1]))
        J_k, g_k, dX_k = net.loss_and_grad(params, X, Y, input_grad=True)
        J_r, g_r, dX_r = reference.loss_and_grad(net, params, X, Y, input_grad=True)
        kernel = max(abs(J_k - J_r) / max(abs(J_r), 1e-300), _rel_err(g_k.flat, g_r.flat),
                     _rel_err(dX_k, dX_r))
        fd = gradcheck(net, params, X, Y, input_grad=True)
        ok = kernel <= args.tol and fd <= args.tol
        failed += not ok
        rows.append((repr(net), f"{kernel:.1e}", f"{fd:.1e}", "pass" if ok else "FAIL"))
    head = ("network", "compiled vs reference", "reference vs finite diff.", "")
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(4)]
    for r in [head, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    print(f"{len(rows) - failed}/{len(rows)} networks pass (largest relative error "
          f"accepted: {args.tol:g}; loss, parameter and input gradients, float64)")
    return 1 if failed else 0
