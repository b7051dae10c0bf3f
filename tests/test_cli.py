"""The ``fastbp`` command end to end: every subcommand through a subprocess (exit
codes, stdout, stderr), bad CSV files, and the parser in process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import cli
from fastbp.datasets import load_iris

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IRIS = os.path.join(ROOT, "fastbp", "datasets", "iris.csv")


def fastbp_cmd(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "fastbp", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, check=False, timeout=600)


def test_demo_end_to_end():
    r = fastbp_cmd("demo", "--no-progress")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "training accuracy 98.0%" in out
    assert "all checks passed" in out
    assert "NumPy reference" in out and "fastbp" in out


def test_train_save_predict_round_trip(tmp_path):
    model = tmp_path / "m.npz"
    r = fastbp_cmd("train", IRIS, "--target", "species", "--hidden", "8", "--epochs", "60",
                   "--seed", "3", "--save", model)
    assert r.returncode == 0, r.stderr
    assert "accuracy on all 150 rows" in r.stdout and model.exists()
    net, params = fastbp.load(model)
    assert net.sizes == (4, 8, 3) and net.loss_name == "cross_entropy"

    out = tmp_path / "pred.csv"
    r = fastbp_cmd("predict", model, IRIS, "--output", out)
    assert r.returncode == 0, r.stderr
    assert "accuracy on 150 rows" in r.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "prediction,p_setosa,p_versicolor,p_virginica"
    assert len(lines) == 151 and lines[1].split(",")[0] in ("setosa", "versicolor", "virginica")

    # the saved model takes raw features: same answers as the library on raw X
    data = load_iris()
    names = np.array(["setosa", "versicolor", "virginica"])
    expected = names[net.predict(params, data.X)]
    assert [ln.split(",")[0] for ln in lines[1:]] == expected.tolist()


def test_check_prints_a_passing_table():
    r = fastbp_cmd("check")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "compiled vs reference" in lines[0]
    body = lines[1:-1]
    assert len(body) == len(cli._check_grid()) and all(ln.endswith("pass") for ln in body)
    assert lines[-1].startswith(f"{len(body)}/{len(body)} networks pass")


@pytest.mark.parametrize("sub", ["", "demo", "train", "predict", "check"])
def test_help_everywhere(sub):
    r = fastbp_cmd(*([sub] if sub else []), "--help")
    assert r.returncode == 0
    assert "usage: fastbp" in r.stdout


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("", "empty file"),
        ("a,b,species\n", "no data rows"),
        ("a,b,species\n1,2,x\n3,oops,y\n", "line 3, column 'b': not a finite number: 'oops'"),
        ("a,b,species\n1,2,x\n3,4\n", "line 3: expected 3 fields"),
        ("a,b,kind\n1,2,x\n3,4,y\n", "no column 'species'"),
    ],
    ids=["missing-file", "empty", "header-only", "non-numeric", "short-row", "missing-column"],
)
def test_bad_csv_is_one_line_and_exit_1(tmp_path, content, message):
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_text(content)
    r = fastbp_cmd("train", path, "--target", "species")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("fastbp: error: ") and message in r.stderr
    assert "data.csv" in r.stderr


def test_usage_error_exit_2_and_debug_traceback(tmp_path):
    r = fastbp_cmd("train", IRIS)  # --target missing
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "--target" in r.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("a,species\nx,y\n")
    r = fastbp_cmd("--debug", "train", bad, "--target", "species")
    assert r.returncode == 1 and "Traceback" in r.stderr and "not a finite number" in r.stderr


def test_predict_rejects_a_corrupt_model(tmp_path):
    model = tmp_path / "m.npz"
    model.write_bytes(b"PK\x03\x04 not really a zip")
    r = fastbp_cmd("predict", model, IRIS)
    assert r.returncode == 1
    assert "m.npz" in r.stderr and r.stderr.count("\n") == 1


# ---------------------------------------------------------------------- in process


def run_main(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "usage: fastbp"),
        (["nonsense"], "invalid choice"),
        (["train", IRIS, "--target", "species", "--hidden", "8,x"], "--hidden"),
        (["train", IRIS, "--target", "species", "--epochs", "0"], "--epochs"),
        (["train", IRIS, "--target", "species", "--validation", "1.5"], "--validation"),
        (["train", IRIS, "--target", "species", "--optimizer", "rmsprop"], "--optimizer"),
        (["train", IRIS, "--target", "species", "--early-stopping", "3", "--validation", "0"],
         "--early-stopping"),
        (["train", IRIS, "--target", "species", "--features", "species"], "both"),
    ],
)
def test_usage_errors_in_process(argv, fragment, capsys):
    code, _, err = run_main(argv, capsys)
    assert code == 2
    assert fragment in err


def test_regression_and_binary_targets(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    y = X[:, 0] - 2 * X[:, 1]
    lab = np.where(y > 0, "yes", "no")
    path = tmp_path / "d.csv"
    rows = ["x1,x2,y,label"] + [f"{a},{b},{c},{d}" for (a, b), c, d in zip(X, y, lab)]
    path.write_text("\n".join(rows) + "\n")
    model = tmp_path / "r.npz"
    code, out, err = run_main(["train", str(path), "--target", "y", "--features", "x1,x2",
                               "--hidden", "0", "--epochs", "30", "--lr", "0.05",
                               "--save", str(model), "--no-progress"], capsys)
    assert code == 0, err
    net, _ = fastbp.load(model)
    assert net.loss_name == "sse" and net.sizes == (2, 1)
    code, out, err = run_main(["predict", str(model), str(path)], capsys)
    assert code == 0 and out.splitlines()[0] == "predicted_y"
    assert "mean squared error on 40 rows" in err

    code, out, err = run_main(["train", str(path), "--target", "label", "--features", "x1,x2",
                               "--loss", "bce", "--epochs", "20", "--save", str(model),
                               "--no-progress"], capsys)
    assert code == 0, err
    net, _ = fastbp.load(model)
    assert net.loss_name == "bce" and net.sizes[-1] == 1
    code, out, err = run_main(["predict", str(model), str(path)], capsys)
    assert code == 0 and out.splitlines()[0] == "prediction,p_no,p_yes"


def test_plot_without_matplotlib_fails_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = run_main(["train", IRIS, "--target", "species", "--plot",
                               str(tmp_path / "loss.png")], capsys)
    assert code == 1 and "matplotlib" in err and out == ""


def test_standardization_is_folded_exactly():
    net = fastbp.Network([3, 4, 2], ["tanh", "softmax"], "cross_entropy")
    p = net.init(seed=0)
    X = np.random.default_rng(1).normal(loc=5, scale=3, size=(10, 3))
    mu, sigma = X.mean(axis=0), X.std(axis=0)
    folded = cli._fold_standardization(net, p, mu, sigma)
    np.testing.assert_allclose(net.forward(folded, X), net.forward(p, (X - mu) / sigma),
                               rtol=1e-12, atol=1e-14)


def test_plot_draws_both_curves(tmp_path, capsys, monkeypatch):
    """--plot with a stand-in for matplotlib: the curves and the file name reach it."""
    drawn = {}

    class Axes:
        def plot(self, x, y, label):
            drawn[label] = np.asarray(y)

        def __getattr__(self, name):
            return lambda *a, **k: None

    class Figure:
        def tight_layout(self):
            pass

        def savefig(self, path):
            drawn["path"] = path

    pyplot = type(sys)("matplotlib.pyplot")
    pyplot.subplots = lambda **kw: (Figure(), Axes())
    pyplot.close = lambda fig: None
    mpl = type(sys)("matplotlib")
    mpl.use = lambda backend: None
    mpl.pyplot = pyplot
    monkeypatch.setitem(sys.modules, "matplotlib", mpl)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", pyplot)
    png = str(tmp_path / "loss.png")
    code, out, err = run_main(["train", IRIS, "--target", "species", "--epochs", "5",
                               "--plot", png, "--no-progress"], capsys)
    assert code == 0, err
    assert drawn["path"] == png and f"plotted to {png}" in out
    assert drawn["training"].shape == drawn["validation"].shape == (5,)


def test_bench_subcommand_registers_itself(capsys, monkeypatch):
    calls = []

    class Bench:
        @staticmethod
        def add_parser(subparsers):
            p = subparsers.add_parser("bench", help="benchmarks")
            p.add_argument("--quick", action="store_true")

        @staticmethod
        def run(args):
            calls.append(args.quick)
            return 0

    monkeypatch.setattr(cli, "_bench", Bench)
    code, _, _ = run_main(["bench", "--quick"], capsys)
    assert code == 0 and calls == [True]
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0 and "bench" in out


def test_predict_with_a_model_saved_by_the_library(tmp_path, capsys):
    """No metadata: the CSV's columns are the features, in order; several sigmoid
    outputs give one decision per output."""
    net = fastbp.Network([2, 3], "sigmoid", "bce")
    p = net.init(seed=0)
    model = tmp_path / "lib.npz"
    fastbp.save(model, net, p)
    data = tmp_path / "x.csv"
    data.write_text("a,b\n0.5,1.0\n-1.0,2.0\n")
    code, out, err = run_main(["predict", str(model), str(data)], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "prediction_0,prediction_1,prediction_2,p_0,p_1,p_2"
    X = np.array([[0.5, 1.0], [-1.0, 2.0]])
    assert [int(v) for v in lines[1].split(",")[:3]] == net.predict(p, X)[0].tolist()
    data.write_text("a,b,c\n1,2,3\n")
    code, out, err = run_main(["predict", str(model), str(data)], capsys)
    assert code == 1 and "takes 2 features" in err


def test_full_batch_from_the_command_line(capsys):
    code, out, err = run_main(["train", IRIS, "--target", "species", "--batch-size", "0",
                               "--optimizer", "sgd", "--lr", "0.5", "--epochs", "50",
                               "--validation", "0", "--no-progress"], capsys)
    assert code == 0, err
    assert "50 epochs (completed)" in out and "validation" not in out


@pytest.mark.parametrize("where", ["directory", "empty", "missing-folder"])
def test_bad_save_destination_fails_before_training(tmp_path, capsys, monkeypatch, where):
    """--save naming a directory (or nothing, or a file in no folder) is one line on
    stderr naming the path, exit code 1, and no training."""
    trained = []
    monkeypatch.setattr(fastbp, "train", lambda *a, **k: trained.append(1))
    target, fragment = {
        "directory": (str(tmp_path), f"--save {str(tmp_path)!r}: is a directory"),
        "empty": ("", "--save: empty path"),
        "missing-folder": (str(tmp_path / "nope" / "m.npz"), "no such directory"),
    }[where]
    code, out, err = run_main(["train", IRIS, "--target", "species", "--save", target,
                               "--no-progress"], capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("fastbp: error: ") and fragment in err
    assert target in err
    assert trained == [] and "trained" not in out and out == ""
    assert os.listdir(tmp_path) == []


def test_train_that_diverges_is_one_line_and_writes_no_model(tmp_path):
    data = tmp_path / "big.csv"
    data.write_text("a,b,y\n1000,2000,1e5\n2000,3000,3e5\n3000,1000,0\n4000,4000,1e6\n")
    model = tmp_path / "m.npz"
    r = fastbp_cmd("train", data, "--target", "y", "--epochs", "100", "--lr", "1",
                   "--optimizer", "sgd", "--activation", "identity", "--no-standardize",
                   "--save", model)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "fastbp: error: training diverged: the loss became NaN or infinite at epoch 3; no "
        "model written (try a smaller --lr than 1)"]
    assert not model.exists() and "trained" not in r.stdout


def test_numeric_class_labels_are_one_class_per_value(tmp_path):
    """``1`` and ``1.0`` in a class column are the same class (named as first
    written), and predict matches them by value."""
    data = tmp_path / "lab.csv"
    data.write_text("a,b,y\n1,2,1\n2,3,1.0\n3,1,0\n4,4,0.0\n5,1,1\n")
    model = tmp_path / "m.npz"
    r = fastbp_cmd("train", data, "--target", "y", "--loss", "cross_entropy", "--epochs", "5",
                   "--save", model)
    assert r.returncode == 0, r.stderr
    assert "(classes: 0, 1)" in r.stdout
    _, _, meta = fastbp.io.load_with_metadata(model)
    assert meta["classes"] == ["0", "1"]
    r = fastbp_cmd("predict", model, data)
    assert r.returncode == 0, r.stderr
    assert "accuracy on 5 rows" in r.stderr and "not seen" not in r.stderr


def test_predict_names_classes_unseen_in_training_and_counts_them_wrong(tmp_path):
    train_csv, new_csv = tmp_path / "t.csv", tmp_path / "n.csv"
    train_csv.write_text("a,b,y\n1,2,x\n2,3,x\n3,1,z\n4,4,z\n")
    new_csv.write_text("a,b,y\n1,2,x\n2,3,w\n3,1,w\n")
    model = tmp_path / "m.npz"
    assert fastbp_cmd("train", train_csv, "--target", "y", "--epochs", "3",
                      "--save", model).returncode == 0
    out = tmp_path / "p.csv"
    r = fastbp_cmd("predict", model, new_csv, "--output", out)
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 4  # every row predicted
    assert "2 of them have classes not seen in training ('w'), counted as wrong" in r.stderr


def test_regression_summary_solver_schedule_and_weights(tmp_path, capsys):
    """R^2 and RMSE next to the loss; --solver lbfgs (no validation split),
    --learning-rate and --sample-weight; --loss poisson."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    y = X[:, 0] - 2 * X[:, 1]
    w = np.where(np.arange(60) % 2 == 0, 0.0, 1.0)
    counts = rng.poisson(np.exp(0.3 * X[:, 0]))
    path = tmp_path / "d.csv"
    rows = ["x1,x2,y,w,n"] + [f"{a},{b},{c},{d},{e}" for (a, b), c, d, e in zip(X, y, w, counts)]
    path.write_text("\n".join(rows) + "\n")
    base = ["train", str(path), "--target", "y", "--features", "x1,x2", "--hidden", "0",
            "--no-progress"]
    code, out, err = run_main([*base, "--solver", "lbfgs", "--epochs", "100"], capsys)
    assert code == 0, err
    line = next(s for s in out.splitlines() if "R^2" in s)
    r2, rmse = float(line.split("R^2 ")[1].split(",")[0]), float(line.split("RMSE ")[1])
    assert r2 > 0.999999 and rmse < 1e-3  # a linear target, fitted by L-BFGS
    assert "iterations" in out
    code, out, err = run_main([*base, "--solver", "lbfgs", "--validation", "0.2"], capsys)
    assert code == 2 and "--validation does not apply to --optimizer lbfgs" in err
    code, out, err = run_main([*base, "--learning-rate", "adaptive"], capsys)
    assert code == 2 and "--learning-rate adaptive needs --early-stopping" in err
    code, out, err = run_main([*base, "--optimizer", "sgd", "--lr", "0.05", "--epochs", "5",
                               "--learning-rate", "invscaling", "--power-t", "0.25",
                               "--sample-weight", "w"], capsys)
    assert code == 0, err
    code, out, err = run_main(["train", str(path), "--target", "n", "--features", "x1",
                               "--loss", "poisson", "--hidden", "0", "--solver", "lbfgs",
                               "--sample-weight", "w", "--no-progress"], capsys)
    assert code == 0, err
    assert "R^2" in out and "'exp', 'poisson'" in out
    code, out, err = run_main([*base, "--sample-weight", "y"], capsys)
    assert code == 2 and "--sample-weight names one column, not the target" in err
