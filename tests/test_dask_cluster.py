"""fastconv.dask on a real distributed.LocalCluster: 2 worker processes, 1 thread each.

Ops and a data-parallel step against single-process fastconv; fault
injection: a worker SIGKILLed mid-computation (the result is still exact),
a task that crashes its worker every time (a clear KilledWorker, no hang),
a task over its worker's memory limit (the nanny restarts the worker).
The nanny writes OMP_NUM_THREADS and friends into this process's
os.environ: the fixture restores it.

The shared cluster allows no task a second try, so that a worker that dies
in a test that does not mean it to (a sanitizer report halts the process, as
in .ci/sanitize.sh) fails that test; the fault tests have clusters of their
own, which allow one.
"""

import os
import signal
import sys
import time

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

from conftest import assert_close  # noqa: E402

import fastconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402
from fastconv import nn, optim  # noqa: E402

# the workers cannot import this test module: send its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

MEMORY_LIMIT = 800 * 2**20


def _cluster(allowed_failures, **kw):
    env = dict(os.environ)
    config = {"distributed.scheduler.allowed-failures": allowed_failures,
              "distributed.worker.memory.terminate": 0.9,
              "distributed.worker.memory.spill": False,
              "distributed.worker.memory.pause": False,
              "distributed.worker.memory.target": False}
    with dask.config.set(config):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", **kw)
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
            os.environ.clear()
            os.environ.update(env)


@pytest.fixture(scope="module")
def client():
    """A cluster where a worker's death fails the task it was running."""
    yield from _cluster(allowed_failures=0)


@pytest.fixture
def own_client():
    """A cluster of its own (for tests that kill workers), whose tasks may
    outlive one worker's death and whose workers may use MEMORY_LIMIT bytes
    each."""
    yield from _cluster(allowed_failures=1, memory_limit=MEMORY_LIMIT)


def _pids(client):
    return client.run(os.getpid)


def _settle(client, old=None, n=2, timeout=60):
    """Wait for ``n`` live workers, one of them new if ``old`` pids are given."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            pids = _pids(client)
        except Exception:  # a worker between death and restart
            pids = {}
        if len(pids) >= n and (old is None or set(pids.values()) - set(old.values())):
            return pids
        time.sleep(0.2)
    raise AssertionError(f"Expected {n} workers (a new one among them) to come back, got {pids}")


def test_ops_on_the_cluster(client):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 23, 19)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    xd = da.from_array(x, chunks=(3, 2, 12, 10))
    y = fd.conv2d(xd, w, stride=(2, 1), padding=((1, 2), (1, 1)), groups=2)
    v, i = fd.max_pool2d(xd, 3, 2, 1, ceil_mode=True, return_indices=True)
    dw = fd.grad.conv2d_weight(xd, w.shape, da.ones(y.shape, chunks=y.chunks, dtype=y.dtype),
                               stride=(2, 1), padding=((1, 2), (1, 1)), groups=2)
    yv, vv, iv, dwv = client.compute([y, v, i, dw], sync=True)
    assert_close(yv, fastconv.conv2d(x, w, None, (2, 1), ((1, 2), (1, 1)), 1, 2), n_terms=18)
    ref_v, ref_i = fastconv.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    assert np.array_equal(vv, ref_v) and np.array_equal(iv, ref_i)
    ref_dw = fastconv.grad.conv2d_weight(x, w.shape, np.ones(y.shape, np.float32), (2, 1),
                                         ((1, 2), (1, 1)), 1, 2)
    assert_close(dwv, ref_dw, n_terms=y[:, 0].size)


def test_set_worker_threads(client):
    assert set(fd.set_worker_threads(client, 2).values()) == {2}
    assert set(client.run(fastconv.get_num_threads).values()) == {2}
    assert set(fd.set_worker_threads(client, 1).values()) == {1}
    with pytest.raises(ValueError, match="Expected n >= 1"):
        fd.set_worker_threads(client, 0)


def _slow(block):
    time.sleep(0.4)
    return block


def test_sigkill_a_worker_mid_computation(own_client):
    client = own_client
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 32, 32))
    w = rng.standard_normal((4, 3, 3, 3))
    xd = da.from_array(x, chunks=(1, 3, 16, 16)).map_blocks(_slow, meta=np.empty((0,) * 4))
    y = fd.conv2d(xd, w, padding=1)
    future = client.compute(y)
    time.sleep(0.8)
    assert not future.done()
    pids = _pids(client)
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    result = future.result(timeout=120)
    assert_close(result, fastconv.conv2d(x, w, padding=1), n_terms=27)
    _settle(client, pids)


def _crash(block):
    os.kill(os.getpid(), signal.SIGKILL)
    return block


def test_a_task_that_kills_its_worker_ends_in_a_clear_error(own_client):
    client = own_client
    xd = da.ones((1, 1, 8), chunks=(1, 1, 8)).map_blocks(_crash, meta=np.empty((0,) * 3))
    future = client.compute(fd.conv1d(xd, np.ones((1, 1, 3))))
    with pytest.raises(distributed.KilledWorker, match="workers died while running it"):
        future.result(timeout=120)


def test_a_worker_death_fails_its_task_on_the_shared_cluster(client):
    """No second try here: a worker halted by a sanitizer report fails the
    test that ran it, instead of passing on the other worker."""
    pids = _settle(client)
    xd = da.ones((1, 1, 8), chunks=(1, 1, 8)).map_blocks(_crash, meta=np.empty((0,) * 3))
    future = client.compute(fd.conv1d(xd, np.ones((1, 1, 3))))
    with pytest.raises(distributed.KilledWorker):
        future.result(timeout=120)
    after = _settle(client, pids)  # the nanny restarts it for the tests after this one
    # one death: a second try would have killed the other worker too
    assert len(set(after.values()) - set(pids.values())) == 1


def _hog(block):
    hold = []
    for _ in range(25):  # up to 2.5 GB, far over the limit
        hold.append(np.ones(12_500_000))
        time.sleep(0.05)
    return block


def test_a_worker_over_its_memory_limit_is_restarted(own_client):
    client = own_client
    before = _settle(client)
    xd = da.ones((1, 1, 8), chunks=(1, 1, 8)).map_blocks(_hog, meta=np.empty((0,) * 3))
    future = client.compute(fd.avg_pool1d(xd, 2))
    with pytest.raises(distributed.KilledWorker):
        future.result(timeout=120)
    after = _settle(client, before, n=1)  # the nanny restarted a killed worker
    assert set(after.values()) - set(before.values())
    # and the restarted workers compute
    x = np.arange(16.).reshape(1, 1, 16)
    out = fd.avg_pool1d(da.from_array(x, chunks=5), 2).compute()
    np.testing.assert_array_equal(out, fastconv.avg_pool1d(x, 2))


# -- data parallel -----------------------------------------------------------------------


def _model(dtype, seed=0):
    r = np.random.default_rng(seed)
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding=1, rng=r, dtype=dtype), nn.ReLU(),
                         nn.MaxPool1d(2), nn.Conv1d(4, 4, 3, stride=2, rng=r, dtype=dtype),
                         nn.Tanh(), nn.Flatten(), nn.Linear(12, 3, rng=r, dtype=dtype))


def _run(dtype, client, steps=3):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((37, 2, 16)).astype(dtype)
    y = rng.integers(0, 3, 37)
    dist, single = _model(dtype), _model(dtype)
    od = optim.Adam(dist.parameters(), lr=0.01)
    os_ = optim.Adam(single.parameters(), lr=0.01)
    loss_d, loss_s = nn.CrossEntropyLoss(), nn.CrossEntropyLoss()
    xd, yd = da.from_array(x, chunks=(10, 2, 16)), da.from_array(y, chunks=7)
    for _ in range(steps):
        ld = fd.data_parallel_step(client, dist, loss_d, od, xd, yd)
        os_.zero_grad()
        ls = loss_s(single(x), y)
        single.backward(loss_s.backward())
        os_.step()
        assert abs(ld - ls) <= 1e-12 if dtype == np.float64 else abs(ld - ls) <= 1e-5
    return dist, single


def test_data_parallel_step_equals_the_full_batch_step_float64(client):
    dist, single = _run(np.float64, client)
    for (name, p), q in zip(dist.named_parameters(), single.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=0, atol=1e-10, err_msg=name)


def test_data_parallel_step_float32_within_rounding(client):
    dist, single = _run(np.float32, client)
    for (name, p), q in zip(dist.named_parameters(), single.parameters()):
        assert p.data.dtype == np.float32
        # Adam's first steps move each weight by about lr: rounding of the
        # gradient sum in float32 moves it by lr * a few eps relative
        np.testing.assert_allclose(p.data, q.data, rtol=0, atol=1e-5, err_msg=name)


class _RunningMean(nn.Module):
    """A layer with a buffer: the running mean of its inputs (as BatchNorm keeps)."""

    def __init__(self):
        self.running = np.zeros(1)
        self.count = np.zeros(1, dtype=np.int64)

    def named_buffers(self):
        return [("running", self.running), ("count", self.count)]

    def forward(self, x):
        self.running[...] = 0.9 * self.running + 0.1 * x.mean()
        self.count += 1
        return x

    def backward(self, grad_out):
        return grad_out


def test_data_parallel_buffers_are_the_shard_weighted_mean(client):
    r = np.random.default_rng(3)
    model = nn.Sequential(_RunningMean(), nn.Linear(4, 2, rng=r, dtype=np.float64))
    opt = optim.SGD(model.parameters(), lr=0.1)
    x = r.standard_normal((12, 4))
    y = r.integers(0, 2, 12)
    fd.data_parallel_step(client, model, nn.CrossEntropyLoss(), opt,
                          da.from_array(x, chunks=(3, 4)), da.from_array(y, chunks=3))
    # 0.1 * (the weighted mean of the shards' means) = 0.1 * the full-batch mean
    np.testing.assert_allclose(model[0].running, [0.1 * x.mean()], rtol=1e-12)
    assert model[0].count.tolist() == [1]


def test_data_parallel_step_rejects_numpy(client):
    model = _model(np.float64)
    with pytest.raises(TypeError, match="Expected x to be a dask array"):
        fd.data_parallel_step(client, model, nn.CrossEntropyLoss(),
                              optim.SGD(model.parameters(), lr=0.1), np.ones((2, 2, 16)),
                              da.zeros(2, dtype=int))


def test_the_scale_command_on_the_cluster(client, capsys):
    from fastconv.__main__ import main

    rc = main(["scale", "--scheduler", client.scheduler.address, "--size", "96", "--tile", "32",
               "--samples", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count("pooling bitwise equal") == 2
    assert "scaling efficiency" in out and "peak worker memory" in out
