"""Optimisers with PyTorch's update rules, for :class:`fastconv.nn.Parameter`.

``step()`` updates each ``Parameter.data`` in place from its ``grad``;
``zero_grad()`` zeroes every ``grad`` in place (PyTorch's default sets them to
``None`` instead; here a gradient is always an array that ``backward`` adds
into). The updates follow ``torch.optim.SGD`` (with ``dampening=0``) and
``torch.optim.Adam`` (``amsgrad=False``) step for step, so a trajectory
matches PyTorch's to rounding. State (momentum buffers, moments) is kept in
each parameter's dtype.

Example
-------
>>> import numpy as np
>>> from fastconv import nn, optim
>>> layer = nn.Linear(3, 1, rng=np.random.default_rng(0))
>>> opt = optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
>>> loss = nn.MSELoss()
>>> before = loss(layer(np.ones((4, 3))), np.zeros((4, 1)))
>>> _ = layer.backward(loss.backward()); opt.step(); opt.zero_grad()
>>> loss(layer(np.ones((4, 3))), np.zeros((4, 1))) < before
True
"""

import math
import numbers

import numpy as np

from .nn import Parameter

__all__ = ["Optimizer", "SGD", "Adam"]


def _hyper(value, name, low=0.0, high=math.inf, high_open=False):
    """``value`` as a float in ``[low, high]`` (``[low, high)`` if ``high_open``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"Expected {name} to be a real number, got {value!r}")
    value = float(value)
    if not (low <= value and (value < high if high_open else value <= high)):
        bracket = ")" if high_open else "]"
        raise ValueError(f"Expected {name} in [{low}, {high}{bracket}, got {value!r}")
    return value


class Optimizer:
    """Holds the parameter list; subclasses implement :meth:`step`.

    Parameters
    ----------
    params : iterable of fastconv.nn.Parameter
        Usually ``model.parameters()``; must not be empty.

    Examples
    --------
    An optimiser of one's own, plain gradient descent:

    >>> import numpy as np
    >>> from fastconv import nn, optim
    >>> class Descent(optim.Optimizer):
    ...     def step(self):
    ...         for p in self.params:
    ...             p.data -= 0.5 * p.grad
    >>> p = nn.Parameter(np.array([1.0, 2.0]))
    >>> opt = Descent([p])
    >>> p.grad[:] = [1.0, 1.0]
    >>> opt.step()
    >>> p.data
    array([0.5, 1.5])
    >>> opt.zero_grad()
    >>> p.grad
    array([0., 0.])
    """

    def __init__(self, params):
        self.params = list(params)
        if not self.params:
            raise ValueError("Expected a non-empty list of parameters, got an empty one")
        for p in self.params:
            if not isinstance(p, Parameter):
                raise TypeError(f"Expected fastconv.nn.Parameter objects, got {p!r}")

    def zero_grad(self):
        """Set every parameter's ``grad`` to 0, in place."""
        for p in self.params:
            p.grad[...] = 0

    def step(self):
        """Update every parameter's ``data`` in place from its ``grad``.
        """
        raise NotImplementedError


class SGD(Optimizer):
    """SGD(params, lr, momentum=0.0, weight_decay=0.0, nesterov=False)

    For each parameter ``p`` with gradient ``g``, as ``torch.optim.SGD``::

        g = g + weight_decay * p
        b = g                      (first step)
        b = momentum * b + g       (later steps)       # only if momentum > 0
        g = g + momentum * b  if nesterov  else  b
        p = p - lr * g

    Parameters
    ----------
    params : iterable of fastconv.nn.Parameter
    lr : float >= 0
    momentum : float >= 0
    weight_decay : float >= 0
        An L2 term added to the gradient.
    nesterov : bool
        Nesterov momentum (needs ``momentum > 0``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn, optim
    >>> p = nn.Parameter(np.array([1.0, -2.0]))
    >>> opt = optim.SGD([p], lr=0.1, momentum=0.9)
    >>> p.grad[:] = 1.0
    >>> opt.step(); p.data                       # b = 1
    array([ 0.9, -2.1])
    >>> opt.step(); p.data                       # b = 0.9 * 1 + 1 = 1.9
    array([ 0.71, -2.29])
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params)
        self.lr = _hyper(lr, "lr")
        self.momentum = _hyper(momentum, "momentum")
        self.weight_decay = _hyper(weight_decay, "weight_decay")
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"Expected nesterov to be a bool, got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError("Expected momentum > 0 with nesterov=True, got momentum=0")
        self.nesterov = bool(nesterov)
        self._buffers = [None] * len(self.params)

    def step(self):
        for i, p in enumerate(self.params):
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.momentum:
                b = self._buffers[i]
                if b is None:
                    b = self._buffers[i] = np.array(g, dtype=p.data.dtype)
                else:
                    b *= self.momentum
                    b += g
                g = g + self.momentum * b if self.nesterov else b
            p.data -= self.lr * g


class Adam(Optimizer):
    """Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    At step ``t = 1, 2, ...``, for each parameter ``p`` with gradient ``g``, as
    ``torch.optim.Adam`` (``weight_decay`` is an L2 term added to the gradient,
    not AdamW's decoupled decay)::

        g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Parameters
    ----------
    params : iterable of fastconv.nn.Parameter
    lr : float >= 0
    betas : (float, float), each in [0, 1)
        The decay rates of the first and second moment estimates.
    eps : float >= 0
    weight_decay : float >= 0

    Examples
    --------
    The first step moves every parameter by about ``lr``, whatever the scale of
    its gradient:

    >>> import numpy as np
    >>> from fastconv import nn, optim
    >>> p = nn.Parameter(np.array([1.0, -2.0]))
    >>> opt = optim.Adam([p], lr=0.1)
    >>> p.grad[:] = [3.0, -0.01]
    >>> opt.step()
    >>> np.round(p.data, 6)
    array([ 0.9, -1.9])
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params)
        self.lr = _hyper(lr, "lr")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Expected betas to be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_hyper(betas[0], "beta1", high=1.0, high_open=True),
                      _hyper(betas[1], "beta2", high=1.0, high_open=True))
        self.eps = _hyper(eps, "eps")
        self.weight_decay = _hyper(weight_decay, "weight_decay")
        self.t = 0
        self._m = [np.zeros_like(p.data) for p in self.params]
        self._v = [np.zeros_like(p.data) for p in self.params]

    def step(self):
        self.t += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1**self.t)
        sqrt_bc2 = math.sqrt(1 - beta2**self.t)
        for p, m, v in zip(self.params, self._m, self._v):
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * (g * g)
            p.data -= step_size * m / (np.sqrt(v) / sqrt_bc2 + self.eps)
