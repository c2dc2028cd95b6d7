"""Meta-Dropout (Lee et al., ICLR 2020), as haebeom-lee/metadrop implements it.

MAML over the metadrop Conv4 plus a meta-learned noise generator phi that perturbs the
latent features of the support set in the inner loop:

- phi has conv layers of theta's shapes (`conv{l}_w` [3,3,in,C], and biases under the
  original's misspelled names `conb{l}_b`) and ONE dense column `dense_w` [F,1], `dense_b`
  [1], shared by all classes (the original tiles it across `way` columns; broadcasting does
  the same). Truncated normal(0.02) conv weights, normal(0.02) dense weight, zero biases.
- At each conv layer, with h the block input: mu = conv(h, theta) + b and
  alpha = conv(h, phi) + b_phi; the pre-activation becomes mu * softplus(z) with
  z ~ Normal(alpha, 1) when sampling and z = alpha when not, then BN -> ReLU -> pool.
  The query forward does NOT sample but still multiplies by softplus(alpha) (the original's
  behaviour, fidelity notes 2).
- Dense layer: logits ~ Normal(mu, softplus(flatten(h) phi_w + phi_b)) when sampling
  (one sigma per example, shared by every class), logits = mu otherwise.
- Noise is redrawn at every inner step; the inner loss is the mean over MC samples of the
  support CE: 1 sample at meta-train, `n_test_mc_samp` at validation and meta-test (the
  original's test pipeline serves both).
- phi is never adapted in the inner loop; the outer Adam learns theta, phi and the BN
  shifts. `maml=True` (the original's --maml) removes both noise paths: phi is still
  created and saved, but the outer optimiser leaves it out, so the model is exactly MAML.
"""
import collections

import tensorflow as tf

from model import nets
from model.maml import MAML



class MetaDropout(MAML):

    def __init__(self, net, inner_lr=0.1, n_steps=5, n_test_steps=None, n_test_mc_samp=1,
                 maml=False, name='metadrop', **options):
        """options: MAML's (first_order, inner_loss, bn_mode, frozen, ...)."""
        if not isinstance(net, nets.Conv4) or net.variant == 'pytorch':
            raise ValueError('Meta-Dropout perturbs the blocks of the TF Conv4 backbones: use '
                             '--backbone conv4 or maml_conv4')
        super().__init__(net, inner_lr=inner_lr, n_steps=n_steps, n_test_steps=n_test_steps,
                         name=name, **options)
        self.maml = bool(maml)
        self.n_test_mc_samp = int(n_test_mc_samp)
        if self.n_test_mc_samp < 1:
            raise ValueError(f'n_test_mc_samp must be >= 1, got {n_test_mc_samp}')
        dtype = net.dtype
        conv_init, dense_init = nets.truncated_normal(0.02), nets.normal(0.02)
        phi = collections.OrderedDict()
        with tf.name_scope('phi'):
            for l in range(1, 5):
                shape = net.theta[f'conv{l}_w'].shape.as_list()
                phi[f'conv{l}_w'] = tf.Variable(conv_init(shape, dtype), name=f'conv{l}_w')
                phi[f'conb{l}_b'] = tf.Variable(nets.zeros([shape[-1]], dtype),
                                                name=f'conb{l}_b')
            phi['dense_w'] = tf.Variable(dense_init([net.feature_dim, 1], dtype), name='dense_w')
            phi['dense_b'] = tf.Variable(nets.zeros([1], dtype), name='dense_b')
        self.phi = phi
        # The noise source: standard normal draws of a shape (tests swap in fixed draws).
        self.noise = lambda shape, dtype: tf.random.normal(shape, dtype=dtype)

    @property
    def outer_variables(self):
        """theta and BN shifts; plus phi unless --maml (the original's 'phi' not in v.name)."""
        vs = super().outer_variables
        return vs if self.maml else vs + list(self.phi.values())

    # ---- the stochastic forward ----------------------------------------------------
    def noise_hook(self, sample, record=None):
        """The conv-layer perturbation, as Conv4's pre_bn hook (None under --maml).

        record: optional dict; the perturbed pre-activation of layer l is stored under l."""
        if self.maml:
            return None
        phi, stride = self.phi, self.net.conv_stride

        def hook(h, mu, l):
            alpha = tf.nn.conv2d(h, phi[f'conv{l}_w'], stride, 'SAME') + phi[f'conb{l}_b']
            z = alpha + self.noise(tf.shape(alpha), alpha.dtype) if sample else alpha
            out = mu * tf.nn.softplus(z)
            if record is not None:
                record[l] = out
            return out
        return hook

    def features(self, params, x, sample=False):
        return self.net.features(x, params, pre_bn=self.noise_hook(sample))

    @property
    def stochastic_inner_loss(self):
        return not self.maml

    def forward(self, params, x, sample, norm=None):
        feats = self.net.features(x, params, pre_bn=self.noise_hook(sample), norm=norm)
        logits = self.net.head(feats, params)
        if sample and not self.maml:
            sigma = tf.nn.softplus(tf.matmul(feats, self.phi['dense_w']) + self.phi['dense_b'])
            logits = logits + sigma * self.noise(tf.shape(logits), logits.dtype)
        return logits

    def inner_loss(self, params, x, y, training=True, norm=None):
        """Mean over MC samples of the support CE under fresh noise (drawn per call, i.e.
        per inner step): 1 sample at meta-train, n_test_mc_samp otherwise."""
        n = 1 if training or self.maml else self.n_test_mc_samp   # --maml: no noise to average
        losses = [self.support_ce(self.forward(params, x, sample=True, norm=norm), y)
                  for _ in range(n)]
        return losses[0] if n == 1 else tf.add_n(losses) / float(n)

    def predict(self, params, x, norm=None):
        """The query forward: no sampling, but the convs still use softplus(alpha)."""
        return self.forward(params, x, sample=False, norm=norm)
