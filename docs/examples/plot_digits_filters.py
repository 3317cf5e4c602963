"""
What a digits CNN learns: first-layer filters and feature maps
==============================================================

Train the main job's CNN (``python -m fastconv train``: two 3x3 convolutions
with max pooling, then two linear layers) on scikit-learn's 8x8 handwritten
digits for a few epochs, then look inside it: the 32 learned 3x3 filters of
the first layer, and the 32 feature maps they produce on one test digit
(after the ReLU).

Each filter is a small template that the convolution slides over the image
(:doc:`/guide/scanning`); a feature map is bright where its template matches.
Several filters learn oriented edges or strokes, and their maps light up on
the parts of the digit drawn in that direction.
"""

import matplotlib.pyplot as plt
import numpy as np

from fastconv import train as fc_train

data = fc_train.load_dataset("digits", seed=0)
model = fc_train.build_model("cnn", data.input_shape, seed=0)
history = fc_train.train(model, data, **fc_train.recipe("digits", epochs=5))
print(f"test accuracy after 5 epochs: {history['test_acc_final']:.3f}")

# %%
# The first layer's filters, each on its own colour scale (red positive, blue
# negative).

conv1 = model.layers[0]
filters = conv1.weight.data[:, 0]  # (32, 3, 3)
fig, axes = plt.subplots(4, 8, figsize=(8, 4.4))
for k, ax in enumerate(axes.flat):
    f = filters[k]
    lim = np.abs(f).max()
    ax.imshow(f, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(str(k), fontsize=8)
fig.suptitle("Conv2d(1, 32, 3): the learned 3x3 filters")
fig.tight_layout()

# %%
# One test digit and the 32 feature maps of the first layer (convolution,
# then ReLU), computed by running the first two layers of the trained model.

model.eval()
digit = data.x_test[:1]                       # (1, 1, 8, 8)
maps = model.layers[1](conv1(digit))[0]       # ReLU(conv): (32, 8, 8)

fig = plt.figure(figsize=(9, 4.4))
grid = fig.add_gridspec(4, 10)
ax = fig.add_subplot(grid[:, :2])
ax.imshow(digit[0, 0], cmap="gray_r")
ax.set_title(f"input: a {data.y_test[0]}")
ax.set_xticks([])
ax.set_yticks([])
for k in range(32):
    ax = fig.add_subplot(grid[k // 8, 2 + k % 8])
    ax.imshow(maps[k], cmap="magma", vmin=0, vmax=max(maps.max(), 1e-6))
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("feature maps of the first layer, after ReLU")
fig.tight_layout()
plt.show()
