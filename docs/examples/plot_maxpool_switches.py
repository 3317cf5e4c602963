"""
Max-pool switches and the gradient they route
=============================================

Max pooling keeps one element per window. ``return_indices=True`` returns
where it was (the *switches*, flat positions ``h*W + w``), and the gradient
of max pooling sends each output's gradient back to exactly that element:
:func:`fastconv.grad.max_pool2d`. Every other input element gets zero.

Here a 3x3 window moves by 2 over an 8x8 input padded by 1, so neighbouring
windows overlap: an element that wins two windows receives both gradients.
"""

import matplotlib.pyplot as plt
import numpy as np

import fastconv

rng = np.random.default_rng(3)
x = rng.permutation(64).reshape(1, 1, 8, 8).astype(np.float64)  # distinct values: no ties
y, idx = fastconv.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
print("output shape", y.shape)
print("switches (flat positions h*W + w):")
print(idx[0, 0])

# %%
# An upstream gradient, one value per pooled output, routed by the switches.

grad_out = np.arange(1, y.size + 1, dtype=np.float64).reshape(y.shape)
grad_in = fastconv.grad.max_pool2d(grad_out, idx, x.shape)
# The rule, checked: the total is kept, and only winners receive anything.
assert np.isclose(grad_in.sum(), grad_out.sum())
assert set(np.flatnonzero(grad_in[0, 0])) == set(idx.ravel())

# %%
# Left: the input, each window's winner circled (a number in the circle is
# the output it won). Right: the input gradient.

rows, cols = np.divmod(idx[0, 0], 8)
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4.8))
ax0.imshow(x[0, 0], cmap="Greys", vmin=0, vmax=80)
for (i, j), v in np.ndenumerate(x[0, 0]):
    ax0.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color="tab:blue")
for k, (r, c) in enumerate(zip(rows.ravel(), cols.ravel())):
    ax0.add_patch(plt.Circle((c, r), 0.42, fill=False, color="tab:red", lw=2))
    ax0.annotate(str(k + 1), (c + 0.3, r - 0.3), color="tab:red", fontsize=8,
                 fontweight="bold")
ax0.set_title("input, 3x3 windows at stride 2 (padding 1): switches circled")
im = ax1.imshow(grad_in[0, 0], cmap="viridis")
for (i, j), v in np.ndenumerate(grad_in[0, 0]):
    if v:
        ax1.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=9, color="white")
ax1.set_title("grad.max_pool2d(dy = 1..16): gradient at the switches")
fig.colorbar(im, ax=ax1, shrink=0.8)
for ax in (ax0, ax1):
    ax.set_xticks(range(8))
    ax.set_yticks(range(8))
fig.tight_layout()
plt.show()
