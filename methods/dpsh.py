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

Hyper-parameters beyond the shared template (``hashbench.deep``): ``eta`` and
``output_scale``. Defaults calibrated on digits with the MLP backbone (500 sampled training
points, 4 mini-batches an epoch): the output layer's initial weights and bias times 10 (the
small backbones; 1 for AlexNet), rate 0.001 (constant), 2,000 epochs (8,000 SGD steps; the
demo ran 150 epochs of 40 steps, 6,000 steps, on CIFAR-10). For AlexNet, calibrate the rate.

Why the output layer starts 10 times larger: the plateau where two classes share one code.
With the backbone's own initialisation (rate 0.004, 1,000 epochs) a run ended either near
MAP 0.985 or near 0.89: 3-seed means 0.919 / 0.888 / 0.954 / 0.987 at 12 / 24 / 32 / 48
bits; per seed at 12 bits 0.889, 0.883, 0.985; at 24 bits 0.889, 0.889, 0.885. In the 0.89
runs two digit classes (1 and 8, or 8 and 9) end on one code: their mean outputs have
cosine 0.999 and under half the norm of the other classes' (the pairs across the two
classes push both away from the shared code, which only shrinks it), and the last hidden
layer sees them alike (cosine 0.96 between the class means). The cause is the start. The
MLP's initial outputs are about 0.04 per bit, with a common component larger than their
spread (25-44 distinct codes over the 500 points, 1-4 bits constant). For ``u_i`` the
likelihood's gradient, ``sum_j (sigmoid(theta_ij) - s_ij) u_j / n``, is proportional to the
outputs, about ``0.4 |u|`` against the common component, while the quantisation term's,
``2 eta (u_i - b_i) / n = 0.04 (u_i - b_i)`` on 500 points, is not: below about 0.1 per bit
the quantisation term wins and pulls every point towards nearly the same code. The classes
then split off one at a time (the training MAP climbs in steps, e.g. 0.85 held from epoch
200 to 550), and the last split, between the two classes the features tell apart least, is
a slow saddle. (The demo's one-sided gradient, half the likelihood against the same eta,
is worse still: every run on digits collapsed to one code, MAP 0.10.) A network whose
outputs start at a few tenths per bit, as a new ``Linear(4096, c)`` on pretrained ReLU
features can, is past that point from the first step; ``output_scale`` puts the small
backbones there. Larger outputs make the likelihood stiffer (its curvature grows like
``|u|^2``, so like c), hence the lower rate: at 0.002 two of five 48-bit runs (1,000
epochs) died, every output on one code; at 0.004 3-seed means were 0.26 / 0.10 (12 / 24
bits).

Evidence (digits protocol, sampled training set; MAP per seed):

* output_scale 10, rate 0.001, 2,000 epochs (the defaults): 12 bits 0.985, 0.974, 0.982,
  0.987, 0.987 (mean 0.983); 32 bits 0.990, 0.992, 0.992; 48 bits 0.991, 0.990, 0.992,
  0.991, 0.993 (0.991). At rate 0.002, 12 bits: 0.985, 0.989, 0.984, 0.982, 0.989.
* the backbone's scale, 2,000 epochs at 0.004: 12 bits 0.985, 0.884, 0.985, 0.987, 0.984
  (mean 0.965): longer training lets some merged runs escape, not all; at 0.002, 0.981,
  0.988, 0.892, 0.984, 0.979.
* the backbone's scale, log-spaced decays (the authors' PyTorch demo divides its rate by
  10 twice, at epochs 50 and 100 of 150): 0.01 to 1e-4 over 1,000 epochs gave 3-seed means
  0.80 (12 bits) / 0.83 (24 bits, 2 seeds); 0.008 to 8e-4, 0.81 / 0.93: less time at a
  useful rate leaves more merges. Higher constant rates: 0.006 no better (12 bits, mean
  0.921); from 0.008 some runs die; 0.02 all.
* the memory U filled with the initial network's outputs instead of zeros (the paper's
  gradient from the first step): the same bimodality (12 bits 0.894, 0.982, 0.885), so the
  authors' zeros are kept.

Fashion-MNIST (real images; ``results/fashion-mnist/README.md``). On a validation split carved
from the ``fashion-mnist`` protocol's database (never its queries): 500 validation queries (50
per class) and a 10,000-image validation database drawn from it, 5,000 training images (500 per
class) sampled from that database, pixels-pca features, MLP backbone, seed 0; reference MAP
there: ITQ 0.440 / 0.495 at 12 / 48 bits, SDH 0.724 at 12 bits. The digits rate and output
scale learn; only the length changes, counted in SGD steps (5,000 points make 40 mini-batches
an epoch, digits 4, so the default 2,000 epochs would be 80,000 steps): 50 epochs (2,000 steps)
0.774 at 12 bits, 100 epochs (4,000 steps) 0.800 (on HOG features 0.769). The Fashion-MNIST
runs use ``epochs=100``.

CIFAR-10 JPEG copy, small CNN on the 32x32 colour images (issue 15). Validation split carved
from the ``imagefolder`` protocol's 59,000-image database, never its 1,000 queries (seed 100):
500 validation queries (50 per class), a 10,000-image validation database (1,000 per class, in
random order), 5,000 training images (500 per class) sampled from it; seed 0; run through
``hashbench.runner.run_trial_data``.

* Why it did not learn before (rate 0.001 and 0.003: one or two codes; 0.01: NaN in the first
  epoch). With the images in [0, 1] the CNN's outputs (times the output scale 10) start at 0.46
  per bit, mostly one direction shared by all images (spread over images 0.095; 8 codes over
  500 images), so theta is about 1.6 for every pair at 12 bits (5.6 at 48) while 90% of the
  pairs are dissimilar. The gradient that removes the shared part has the same sign for every
  point of a batch, so over the batch's sum it adds up 128-fold, and it is taken against the
  memory ``U``, which keeps outputs up to an epoch old: a step that removes the shared part is
  followed by pushes from stale rows, and it overshoots. Traced on 2,000 training images: at
  0.01 the first step's gradient on the CNN's fully connected layer has norm 465, the outputs
  reach 30 per bit after one step and overflow by the third; at 0.001 a spike at step 12 (loss
  384, that gradient 1.4e3) leaves a spread of 0.000 over the images: every image on one code,
  the recorded collapse. The template now standardises the small CNN's input channels
  (``hashbench.deep``): at init the spread is 0.26 against a mean of 0.42 (57 codes over 500
  images at 12 bits, 496 at 48).
* Probes (2,000 training images, 2,000-image validation database, 12 bits, standardised inputs):
  0.001 still collapsed (one code from epoch 4); output scale 1 or 3 at 0.001-0.01: one code
  (at small outputs the quantisation pull towards the shared code wins, as on digits); 3e-4
  learns, slowly: 0.129 / 0.134 / 0.157 / 0.169 after 4 / 8 / 12 / 16 epochs. (Centred inputs
  without the scaling at 0.001: 0.162 after 16 epochs.)
* Calibrated setting for the small CNN: standardised inputs (automatic), output scale 10, plain
  SGD, eta 10 (the defaults), rate **3e-4 constant, 20 epochs** (800 SGD steps): 12 bits 0.266
  (1,577 distinct codes over the 10,000 validation items; 0.195 / 0.225 / 0.252 after 5 / 10 /
  15 epochs), 48 bits 0.267 (9,933 codes; 0.197 / 0.219 / 0.242), both still rising: it learns,
  more slowly than DSH and DHN, and 48 bits are level with 12, not above. About 16-17
  CPU-seconds an epoch over 5,000 images on one core (324-332 s of training, load about 6 on 2
  cores).
  ``--param dpsh.backbone=cnn --param dpsh.epochs=20 --param dpsh.learning_rate=0.0003``. The
  registered defaults stay those calibrated on digits with the MLP. Through the MLP on HOG
  vectors with ``epochs=100`` it learns too (test split 0.238 / 0.273 at 12 / 48 bits).
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
        requires="gpu-preferred",
        supervised=True,
    )
    conformance_params = {"epochs": 3}
    uses_memory = True

    epochs: int = 2000
    learning_rate: float = 0.001
    momentum: float = 0.0
    eta: float = 10.0
    output_scale: float | None = None

    def validate(self) -> None:
        super().validate()
        if not self.eta >= 0:
            raise ConfigError(f"dpsh: eta must be >= 0, got {self.eta!r}")
        if self.output_scale is not None and not self.output_scale > 0:
            raise ConfigError(f"dpsh: output_scale must be positive, got {self.output_scale!r}")

    def resolved_output_scale(self) -> float:
        """``output_scale``, or by default 10 for the small backbones and 1 for AlexNet."""
        if self.output_scale is not None:
            return float(self.output_scale)
        return 1.0 if self.backbone == "alexnet" else 10.0

    def initialise(self, model: torch.nn.Module) -> None:
        """Multiply the output layer's initial weights and bias by the output scale."""
        scale = self.resolved_output_scale()
        output_layer = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            output_layer.weight.mul_(scale)
            output_layer.bias.mul_(scale)

    def batch_loss(self, batch: Batch) -> torch.Tensor:
        assert batch.memory is not None
        sim = similarity(batch.labels, batch.train_labels)
        return dpsh_loss(batch.outputs, batch.memory, sim, self.eta, batch.n_train)
