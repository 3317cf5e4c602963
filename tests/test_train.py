"""The training demo (fastconv.train, ``python -m fastconv train``): short runs
on real data, the saved state, the plot, both backends, the MNIST-1D
permutation, the residual block and the message for missing extras. Each test
takes at most a few seconds; they are skipped without the demo extras."""

import random
import re
import sys

import numpy as np
import pytest
from conftest import assert_close

import fastconv
from fastconv import _backend, nn

pytest.importorskip("sklearn")
pytest.importorskip("tqdm")

from fastconv import train as T  # noqa: E402

DIGITS = dict(batch_size=32, lr=5e-3)


@pytest.fixture(scope="module")
def digits():
    return T.load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def mnist1d():
    pytest.importorskip("mnist1d")
    return T.load_dataset("mnist1d", seed=0)


def predictions(model, x):
    model.eval()
    return model(x).argmax(axis=1)


# -- data ---------------------------------------------------------------------


def test_digits_split_is_stratified_and_scaled(digits):
    assert digits.x_train.shape == (1347, 1, 8, 8) and digits.x_test.shape == (450, 1, 8, 8)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    assert 0 <= digits.x_train.min() and digits.x_train.max() <= 1
    train_counts = np.bincount(digits.y_train, minlength=10) / len(digits.y_train)
    test_counts = np.bincount(digits.y_test, minlength=10) / len(digits.y_test)
    assert_close(train_counts, test_counts, atol=0.01)


def test_mnist1d_shapes_and_global_rng_untouched(mnist1d):
    assert mnist1d.x_train.shape == (4000, 1, 40) and mnist1d.x_test.shape == (1000, 1, 40)
    assert set(np.unique(mnist1d.y_test)) == set(range(10))
    # mnist1d seeds the global RNGs while generating; load_dataset restores them.
    np.random.seed(123)
    random.seed(123)
    expected = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    T.load_dataset("mnist1d")
    assert (np.random.random(), random.random()) == expected


def test_mnist1d_shuffle_is_one_fixed_permutation(mnist1d):
    shuffled = T.load_dataset("mnist1d", seed=0, shuffle=True)
    perm = shuffled.permutation
    assert mnist1d.permutation is None
    assert sorted(perm) == list(range(40)) and not np.array_equal(perm, np.arange(40))
    # The same permutation of positions, for every sample, train and test alike.
    np.testing.assert_array_equal(shuffled.x_train, mnist1d.x_train[:, :, perm])
    np.testing.assert_array_equal(shuffled.x_test, mnist1d.x_test[:, :, perm])
    np.testing.assert_array_equal(shuffled.y_train, mnist1d.y_train)
    np.testing.assert_array_equal(shuffled.y_test, mnist1d.y_test)
    # Fixed by the seed.
    np.testing.assert_array_equal(T.load_dataset("mnist1d", seed=0, shuffle=True).permutation,
                                  perm)
    assert not np.array_equal(T.load_dataset("mnist1d", seed=1, shuffle=True).permutation, perm)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="Expected dataset"):
        T.load_dataset("cifar")
    with pytest.raises(ValueError, match="Expected model"):
        T.build_model("vgg", (1, 8, 8))


# -- models -------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 40)])
@pytest.mark.parametrize("name", ["cnn", "mlp", "logistic"])
def test_models_map_inputs_to_ten_logits(name, shape):
    model = T.build_model(name, shape, seed=0)
    x = np.random.default_rng(0).random((3,) + shape, dtype=np.float32)
    assert model(x).shape == (3, 10)
    assert model.backward(np.ones((3, 10), np.float32)).shape == x.shape


def test_build_model_is_reproducible():
    a, b, c = (T.build_model("cnn", (1, 40), seed=s).state_dict() for s in (0, 0, 1))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["0.weight"], c["0.weight"])


def test_residual_gradient_matches_central_differences():
    rng = np.random.default_rng(0)
    block = nn.Residual(nn.Sequential(nn.Linear(4, 4, rng=rng, dtype=np.float64), nn.Tanh()))
    x = rng.standard_normal((3, 4))
    gy = rng.standard_normal((3, 4))
    block(x)
    gx = block.backward(gy)
    eps = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        numeric[i] = np.sum((block(x + d) - block(x - d)) * gy) / (2 * eps)
    assert_close(gx, numeric, rtol=1e-6, atol=1e-8)
    assert [name for name, _ in block.named_parameters()] == ["body.0.weight", "body.0.bias"]


# -- training -----------------------------------------------------------------


def test_short_digits_run_learns(digits):
    model = T.build_model("cnn", digits.input_shape, seed=0)
    history = T.train(model, digits, seed=0, **T.recipe("digits", epochs=2))
    assert history["epoch"] == [1, 2] and history["step"] == [43, 86]
    assert len(history["epoch_time"]) == 2
    assert history["train_loss"][1] < history["train_loss"][0] < np.log(10) + 0.1
    assert history["train_acc"][1] > history["train_acc"][0]
    assert history["test_acc_final"] > 0.6  # chance is 0.1


def test_training_is_reproducible(digits):
    runs = []
    for _ in range(2):
        model = T.build_model("cnn", digits.input_shape, seed=5)
        T.train(model, digits, steps=30, seed=5, **DIGITS)
        runs.append(model.state_dict())
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_steps_override_epochs_and_eval_every(digits):
    model = T.build_model("logistic", digits.input_shape, seed=0)
    history = T.train(model, digits, steps=100, eval_every=2, seed=0, **DIGITS)
    # 43 steps per epoch: 3 epochs, the last one cut at step 100.
    assert history["epoch"] == [2, 3] and history["step"] == [86, 100]
    with pytest.raises(ValueError, match="exactly one of epochs and steps"):
        T.train(model, digits, epochs=1, steps=10)


def test_batch_schedule_orders():
    fixed = list(T.batch_schedule(10, 4, 7, "fixed", seed=0))
    shuffled = list(T.batch_schedule(10, 4, 7, "shuffle", seed=0))
    for epochs in (fixed, shuffled):
        assert [len(b) for e in epochs for b in e] == [4, 4, 2, 4, 4, 2, 4]
        assert sorted(np.concatenate(epochs[0])) == list(range(10))
    # "fixed": every epoch repeats the first; "shuffle": a new permutation.
    np.testing.assert_array_equal(np.concatenate(fixed[1]), np.concatenate(fixed[0]))
    assert not np.array_equal(np.concatenate(shuffled[1]), np.concatenate(shuffled[0]))
    with pytest.raises(ValueError, match="Expected batch_order"):
        T.batch_schedule(10, 4, 7, "random")
    assert T.recipe("mnist1d", steps=10)["steps"] == 10
    assert T.recipe("digits", steps=10)["epochs"] is None


def test_cosine_schedule_decays_from_the_optimizer_rate(digits):
    from fastconv import optim

    model = T.build_model("logistic", digits.input_shape, seed=0)
    opt = optim.Adam(model.parameters(), lr=0.02)
    seen = []
    step = opt.step
    opt.step = lambda: (seen.append(opt.lr), step())[1]
    T.train(model, digits, optimizer=opt, steps=10, lr_schedule="cosine")
    assert_close(seen, 0.01 * (1 + np.cos(np.pi * np.arange(10) / 10)))
    with pytest.raises(ValueError, match="Expected lr_schedule"):
        T.train(model, digits, steps=1, lr_schedule="step")


def test_blas_threads_limits_numpy_matmul():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with T.blas_threads(1):
        blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        assert all(i["num_threads"] == 1 for i in blas)
    with T.blas_threads(None):  # a no-op
        pass


def test_mnist1d_short_run_beats_chance(mnist1d):
    model = T.build_model("cnn", mnist1d.input_shape, seed=0)
    history = T.train(model, mnist1d, seed=0, **T.recipe("mnist1d", steps=300))
    assert history["test_acc_final"] > 0.35  # chance is 0.1


def test_numpy_backend_trains_the_same_model(digits):
    states = {}
    for backend in ("numpy", "fastconv"):
        model = T.build_model("cnn", digits.input_shape, seed=0)
        history = T.train(model, digits, steps=20, seed=0, backend=backend, **DIGITS)
        assert _backend.get_backend() == "fastconv"  # restored
        states[backend] = (model.state_dict(), history["train_loss"][-1])
    (a, loss_a), (b, loss_b) = states["numpy"], states["fastconv"]
    assert abs(loss_a - loss_b) < 1e-4
    for k in a:
        assert_close(a[k], b[k], atol=1e-4)


def test_time_backends_runs_the_same_epoch_on_each(digits):
    model = T.build_model("cnn", digits.input_shape, seed=0)
    from fastconv import optim

    # SGD, whose steps are linear in the gradients: the backends' parameters
    # then differ by rounding alone (3e-8 here, on every build), where another
    # order of the same batches moves them by 6e-3. Adam divides each step by
    # the gradient's running RMS, so rounding in a near-zero gradient can move
    # a parameter by up to lr per step (1e-4 after this epoch on the generic
    # build, whose rounding differs from the reference's more: no FMA).
    opt = optim.SGD(model.parameters(), lr=0.1)
    before = model.state_dict()
    result = T.time_backends(model, opt, digits, batch_size=128, seed=0)
    assert result["steps"] == 11 and set(result["seconds"]) == {"numpy", "fastconv"}
    assert all(t > 0 for t in result["seconds"].values())
    assert result["max_param_diff"] < 1e-5
    after = model.state_dict()  # the timed copies leave the model alone
    assert all(np.array_equal(before[k], after[k]) for k in before)


# -- command line -------------------------------------------------------------


def test_speedup_is_worded_both_ways():
    assert T._speedup(2.44) == "2.4x faster"
    assert T._speedup(1.0) == "1.0x faster"
    assert T._speedup(0.3) == "3.3x slower"


def test_cli_save_round_trip_and_plot(tmp_path, capsys, threads):
    pytest.importorskip("matplotlib")
    path, png = tmp_path / "model.npz", tmp_path / "curves.png"
    argv = ["train", "--epochs", "2", "--threads", "1", "--seed", "3", "--quiet",
            "--save", str(path), "--plot", str(png)]
    from fastconv.__main__ import main

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "final test accuracy" in out and "time per epoch" in out
    assert "numpy reference" in out and re.search(r"\d\.\dx (faster|slower) ", out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The saved weights, loaded into a fresh model, predict what the trained one did.
    data = T.load_dataset("digits", seed=3)
    fresh = T.build_model("cnn", data.input_shape, seed=99)
    with np.load(path) as state:
        fresh.load_state_dict(state)
    _, acc = T.evaluate(fresh, data.x_test, data.y_test)
    printed = float(out.split("final test accuracy: ")[1].split("%")[0])
    assert abs(100 * acc - printed) < 0.006
    # And identically to a model trained the same way in this process.
    fastconv.set_num_threads(1)
    again = T.build_model("cnn", data.input_shape, seed=3)
    T.train(again, data, seed=3, **T.recipe("digits", epochs=2))
    np.testing.assert_array_equal(predictions(fresh, data.x_test),
                                  predictions(again, data.x_test))


def test_cli_numpy_backend(capsys):
    from fastconv.__main__ import main

    assert main(["train", "--model", "mlp", "--steps", "20", "--backend", "numpy",
                 "--quiet", "--no-compare"]) == 0
    out = capsys.readouterr().out
    assert "backend numpy" in out and "time per epoch (numpy)" in out


def test_cli_rejects_bad_options(capsys):
    with pytest.raises(SystemExit):
        T.main(["--epochs", "0"])
    assert "Expected --epochs >= 1" in capsys.readouterr().err


def test_missing_extra_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now fails
    assert T.main(["--steps", "1", "--no-compare"]) == 2
    assert 'pip install "fastconv[demo]"' in capsys.readouterr().err
