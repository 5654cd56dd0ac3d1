"""DPSH: deep pairwise-supervised hashing (Li, Wang & Kang, IJCAI 2016).

Objective (the paper's relaxed problem, with ``U`` the network outputs and ``B = sign(U)``)::

    L = - sum_{s_ij in S} (s_ij theta_ij - log(1 + e^theta_ij)) + eta sum_i ||b_i - u_i||^2
    theta_ij = 0.5 u_i^T u_j,   s_ij = 1 when i and j share a label, else 0

over all pairs of training points. ``log(1 + e^x)`` is evaluated stably
(``hashbench.deep.log_one_plus_exp``): it neither overflows for large theta nor loses small values.

Mini-batches, as in the authors' PyTorch demo: the outputs of every training point are
kept in a memory ``U`` (zeros until a point is first seen; the batch's own rows are set to
its current outputs first), and a batch ``i in B`` is paired with every training point j
through ``theta_ij = 0.5 u_i^T U_j`` with ``U`` held fixed (no gradient through the memory).

The factor 2. The pair (i, j) and the pair (j, i) are both in S and carry the same term
(S and theta are symmetric), so ``u_i`` appears in 2n terms and the paper's gradient
with respect to ``u_i`` is::

    dL/du_i = 1/2 sum_j (a_ij - s_ij) u_j + 1/2 sum_j (a_ji - s_ji) u_j + 2 eta (u_i - b_i)
            =     sum_j (a_ij - s_ij) u_j                               + 2 eta (u_i - b_i)

with ``a_ij = sigmoid(theta_ij)``. Differentiating only the batch's rows ``theta_ij`` with
the memory fixed gives ``1/2 sum_j (a_ij - s_ij) u_j``: the terms (j, i), where i is the
second point, are lost. One-sided implementations (the authors' demo among them) therefore
follow half the likelihood gradient, which is the paper's objective with eta doubled (and
the step halved): their ``eta = 10`` is ``eta = 20`` in the paper's terms. Here the
likelihood of the batch's rows is counted twice, once for (i, j) and once for (j, i), so
autograd returns exactly that gradient (``tests/test_dpsh.py`` checks it against the formula),
with the demo's ``eta = 10`` as the default.

Scale and optimiser: the mini-batch loss is the sum over the batch's points divided by
n (the number of training points): MatConvNet, in which the ADSH paper ran its baselines,
sums a batch's loss, and with the demo's ``1 / (n |B|)`` the weight decay of 5e-4 the paper
prescribes outweighed the loss gradient on digits (MAP 0.58 instead of 0.81 at 12 bits in
a 300-epoch probe). Plain SGD without momentum, as in the authors' demo: with momentum 0.9,
in every setting tried on digits, bits stuck at one value for every item or the network
died (every output 0, one code for everything); each point is pushed against outputs
remembered up to an epoch ago, and momentum turns that delay into oscillation. Network
output: linear (no tanh), as in the paper; the quantisation term keeps it near +-1.

Hyper-parameters beyond the shared template (``hashbench.deep``): ``eta``. Defaults
calibrated on digits with the MLP backbone (500 sampled training points, 4 mini-batches an
epoch): rate 0.004, 1,000 epochs (4,000 SGD steps; the demo ran 150 epochs of 40 steps
on CIFAR-10). At 12 bits DPSH often stops on a plateau where two classes share one code
(MAP about 0.89); it leaves it only slowly. For AlexNet, start from a lower rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hashbench.api import MethodMeta
from hashbench.deep import Batch, SymmetricDeepHasher, log_one_plus_exp, similarity
from hashbench.errors import ConfigError
from hashbench.registry import register


def dpsh_loss(outputs: torch.Tensor, memory: torch.Tensor, sim: torch.Tensor, eta: float,
              n_train: int, both_sides: bool = True) -> torch.Tensor:
    """DPSH's loss for a batch (summed over its points), divided by ``n_train``.

    ``outputs`` (B, c) with autograd; ``memory`` (n, c) the outputs of all training points
    (used without gradient); ``sim`` (B, n) the 0/1 similarities. With ``both_sides`` the
    likelihood counts the pairs (i, j) and (j, i) (factor 2, the paper's gradient);
    without it, only (i, j) (the one-sided form of the authors' demo).
    """
    theta = 0.5 * outputs @ memory.detach().T
    likelihood = (log_one_plus_exp(theta) - sim * theta).sum()
    codes = torch.where(outputs > 0, 1.0, -1.0).detach()  # b_i = sign(u_i)
    quantization = ((codes - outputs) ** 2).sum()
    pairs = 2.0 if both_sides else 1.0
    return (pairs * likelihood + eta * quantization) / n_train


@register
@dataclass(eq=False)
class DPSH(SymmetricDeepHasher):
    meta = MethodMeta(
        name="dpsh",
        title="DPSH",
        citation="Li, Wang & Kang, Feature learning based deep supervised hashing with "
                 "pairwise labels, IJCAI 2016",
        family="deep",
        input="features",
        supervised=True,
    )
    conformance_params = {"epochs": 3}
    uses_memory = True

    epochs: int = 1000
    learning_rate: float = 0.004
    momentum: float = 0.0
    eta: float = 10.0

    def validate(self) -> None:
        super().validate()
        if not self.eta >= 0:
            raise ConfigError(f"dpsh: eta must be >= 0, got {self.eta!r}")

    def batch_loss(self, batch: Batch) -> torch.Tensor:
        assert batch.memory is not None
        sim = similarity(batch.labels, batch.train_labels)
        return dpsh_loss(batch.outputs, batch.memory, sim, self.eta, batch.n_train)
