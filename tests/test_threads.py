"""Thread-count agnosticism, concurrent Python threads, fork safety, and the
thread-count controls (set_num_threads, OMP_NUM_THREADS, threadpoolctl)."""

import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import assert_close

import fastconv


def _conv_results(rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    # large enough that every op runs on 8 threads (see _plan.GRAIN)
    x = rng.standard_normal((6, 8, 40, 37)).astype(np.float32)
    w = rng.standard_normal((16, 4, 3, 3)).astype(np.float32)
    kw = dict(stride=2, padding=1, groups=2)
    y = fastconv.conv2d(x, w, **kw)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    return {
        "forward": y,
        "input": fastconv.grad.conv2d_input(x.shape, w, gy, **kw),
        "weight": fastconv.grad.conv2d_weight(x, w.shape, gy, **kw),
        "bias": fastconv.grad.conv_bias(gy),
        "transpose": fastconv.conv_transpose2d(gy, w, stride=2,
                                               padding=1, groups=2),
    }


def _pool_results():
    rng = np.random.default_rng(1)
    x = np.round(rng.standard_normal((8, 16, 48, 41)), 1)
    y, idx = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    gy = rng.standard_normal(y.shape)
    a = fastconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    ga = rng.standard_normal(a.shape)
    return {
        "max": y,
        "idx": idx,
        "max_grad": fastconv.grad.max_pool2d(gy, idx, x.shape),
        "avg": a,
        "avg_grad": fastconv.grad.avg_pool2d(ga, x.shape, 3, 2, 1, ceil_mode=True,
                                             count_include_pad=False),
    }


@pytest.mark.parametrize("n_threads", [2, 3, 8])
def test_results_do_not_depend_on_thread_count(n_threads, threads):
    threads.set_num_threads(1)
    conv_1, pool_1 = _conv_results(), _pool_results()
    threads.set_num_threads(n_threads)
    assert fastconv.get_num_threads() == n_threads
    conv_n, pool_n = _conv_results(), _pool_results()
    for key in conv_1:
        assert_close(conv_n[key], conv_1[key], n_terms=500, err_msg=key)
    for key in pool_1:  # pooling is bitwise identical
        np.testing.assert_array_equal(pool_n[key], pool_1[key], err_msg=key)


def test_concurrent_python_threads():
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((4, 3, 20, 20)) for _ in range(8)]
    w = rng.standard_normal((5, 3, 3, 3))
    serial = [fastconv.conv2d(x, w, padding=1) for x in xs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda x: fastconv.conv2d(x, w, padding=1), xs))
    for a, b in zip(parallel, serial):
        np.testing.assert_array_equal(a, b)


def _child(conn):
    x = np.ones((4, 3, 16, 16))
    w = np.ones((2, 3, 3, 3))
    conn.send(float(fastconv.conv2d(x, w).sum()))
    conn.close()


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX only")
def test_fork_after_use():
    fastconv.conv2d(np.ones((8, 3, 32, 32)), np.ones((4, 3, 3, 3)))  # start the thread pool
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child,))
    proc.start()
    got = parent.recv() if parent.poll(60) else None
    proc.join(10)
    if proc.is_alive():
        proc.kill()
    assert got == 4 * 2 * 14 * 14 * 27.0, "forked child hung or failed"


def test_set_num_threads_validates(threads):
    with pytest.raises(ValueError, match="n >= 1"):
        fastconv.set_num_threads(0)
    with pytest.raises(TypeError, match="int or None"):
        fastconv.set_num_threads(2.0)
    fastconv.set_num_threads(3)
    assert fastconv.get_num_threads() == 3
    fastconv.set_num_threads(None)


def _openmp():
    from fastconv._kernels import _openmp

    return _openmp.openmp_enabled()


@pytest.mark.skipif(not _openmp(), reason="serial build")
def test_omp_num_threads_is_honoured():
    code = "import fastconv; print(fastconv.get_num_threads())"
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "3"


@pytest.mark.skipif(not _openmp(), reason="serial build")
def test_threadpoolctl_controls_fastconv():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert fastconv.get_num_threads() == 1
    apis = {i["user_api"] for i in threadpoolctl.threadpool_info()}
    assert "openmp" in apis
