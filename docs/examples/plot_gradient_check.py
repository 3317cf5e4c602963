"""
Checking a gradient against finite differences
==============================================

The weight gradient of a convolution, :func:`fastconv.grad.conv2d_weight`,
through the loss :math:`L(w) = \\sum g \\tanh(\\mathrm{conv2d}(x, w))`,
against the central difference :math:`(L(w + \\epsilon e) - L(w -
\\epsilon e)) / 2\\epsilon` along a random unit direction :math:`e`, and
against the one-sided forward difference, for steps
:math:`\\epsilon` from :math:`10^{-12}` to :math:`10^{-1}`, in float64 and
float32 (see :doc:`/guide/gradients`).

The error falls with the step (truncation: :math:`O(\\epsilon^2)` central,
:math:`O(\\epsilon)` forward) until rounding takes over
(:math:`O(u/\\epsilon)`, :math:`u` the unit roundoff): the V shape. Balancing
the two puts the best central step near :math:`u^{1/3}` with an error near
:math:`u^{2/3}`: about :math:`10^{-5}` and :math:`10^{-11}` in float64, but
:math:`10^{-2.5}` and :math:`10^{-5}` in float32, where the step is so large
that a kink of the function (a ReLU, a max-pool switch) inside it spoils the
check. That is why gradient checks run in float64.
"""

import matplotlib.pyplot as plt
import numpy as np

import fastconv

rng = np.random.default_rng(0)
x64 = 0.3 * rng.standard_normal((2, 3, 8, 8))
w64 = rng.standard_normal((4, 3, 3, 3))
g64 = rng.standard_normal(fastconv.conv2d(x64, w64, padding=1).shape)
direction = rng.standard_normal(w64.shape)
direction /= np.linalg.norm(direction)
steps = np.logspace(-12, -1, 45)


def errors(dtype):
    x, w, g, e = (a.astype(dtype) for a in (x64, w64, g64, direction))

    def loss(weight):  # L = sum(g * tanh(conv2d(x, w))): the op runs in dtype
        y = fastconv.conv2d(x, weight.astype(dtype), padding=1).astype(np.float64)
        return float(np.sum(g64 * np.tanh(y)))

    # dL/dy = g * (1 - tanh(y)^2), then the weight gradient of the convolution
    y = fastconv.conv2d(x, w, padding=1).astype(np.float64)
    dy = (g64 * (1 - np.tanh(y) ** 2)).astype(dtype)
    analytic = np.sum(fastconv.grad.conv2d_weight(x, w.shape, dy, padding=1)
                      .astype(np.float64) * direction)
    central, forward = [], []
    base = loss(w)
    for eps in steps:
        up, down = loss(w + eps * e), loss(w - eps * e)
        central.append(abs((up - down) / (2 * eps) - analytic) / abs(analytic))
        forward.append(abs((up - base) / eps - analytic) / abs(analytic))
    return np.array(central), np.array(forward)


fig, ax = plt.subplots(figsize=(7, 4.5))
for dtype, color in ((np.float64, "tab:blue"), (np.float32, "tab:orange")):
    central, forward = errors(dtype)
    name = np.dtype(dtype).name
    ax.loglog(steps, central, "o-", ms=3, color=color, label=f"central, {name}")
    ax.loglog(steps, forward, "--", color=color, alpha=0.7, label=f"forward, {name}")
    best = steps[np.argmin(central)]
    print(f"{name}: best step {best:.1e}, relative error {central.min():.1e}")
ax.set_xlabel("step $\\epsilon$")
ax.set_ylabel("relative error of the directional derivative")
ax.set_title("grad.conv2d_weight against finite differences")
ax.grid(True, which="major", alpha=0.3)
ax.legend()
fig.tight_layout()
plt.show()
