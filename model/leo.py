"""LEO, latent embedding optimisation (Rusu et al., ICLR 2019), as deepmind/leo model.py has it.

One module over pre-computed image embeddings (640-d for the published WRN-28-10 features).
For an N-way K-shot task with support x [N, K, D]:

1. encoder: dropout on x, then a linear map to L latents (no bias) -> codes [N, K, L];
2. relation network: an MLP (2L, 2L, 2L; ReLU between layers, none after the last, no bias)
   on every ordered pair (code_i, code_j) of the N*K support codes, self-pairs and other
   classes included, averaged over the partner j;
3. the result averaged over the K examples of each class (and tiled back), split into the
   means and the pre-scale u of the latent distribution, sigma = max(exp(u) - 1, 1e-10)
   (not a softplus), and one reparameterised sample per (class, example) at meta-train;
   the means at meta-test;
4. decoder: a linear map (no bias) from each latent to 2D numbers, the means and pre-scale
   of the classifier weights, sampled with sigma = max(exp(u) - 1 + sqrt(2 / (N + D)),
   1e-10) at meta-train (fresh noise at every decoder call), their means at meta-test;
5. prediction: logits of example x for class c = <x, W_c,m> averaged over the K weight
   copies m (dropout on x at meta-train, a fresh mask at every call);
6. LEO inner loop: T (inner_unroll_length) steps z <- z - alpha * d(sum of support
   cross-entropies)/dz with a learned step size alpha per latent [1, 1, L], decoding again
   after every step; then F (finetuning_unroll_length) steps W <- W - beta * d(sum of
   support CE)/dW with a learned beta per embedding dimension [1, 1, D]. The inner
   gradients are of the SUM over support examples, and the meta-gradient is second order
   through both loops.

Per-episode loss: mean query cross-entropy + kl_weight * KL + encoder_penalty_weight *
mean((z_0 - stop_gradient(z_T))^2) + l2_penalty_weight * 1/2 * sum of squares of the five
weight matrices + orthogonality_penalty_weight * mean((C - I)^2), C the correlation matrix of
the decoder's rows. The KL is the single-sample estimate mean(log q(z) - log N(z; 0, 1)) over
the N*K*L sampled latents; the KL of the decoder's weight samples is computed by the
original and discarded, so it is not computed here. KL and encoder penalty are 0 at
meta-test. Seven variables, 172,736 numbers at the defaults (N=5, D=640, L=64).

Everything is batched over the episodes of a metabatch (a leading axis T): every operation
is per episode, and an episode's latents only reach its own losses, so the gradient of the
sum over all episodes' support losses is each episode's own inner gradient. The module is
float64 by default as the original module is (its runner trains in float32:
use_64bits_dtype=False); inputs are cast to the module's dtype.
"""
import math

import sonnet as snt
import tensorflow as tf

SIGMA_FLOOR = 1e-10
ROW_NORM_EPS = 1e-32   # in the decoder correlation's denominator, as the original
NAN_FALLBACK_SCALE = 1e-4   # intended NaN fallback: the gradient of (1e-4 / lambda_1) * L2


def glorot_uniform():
    """tf.glorot_uniform_initializer: U(-sqrt(6 / (fan_in + fan_out)), +...)."""
    return snt.initializers.VarianceScaling(1.0, 'fan_avg', 'uniform')


class LEO(snt.Module):
    """deepmind/leo's LEO module for N-way (`way`) K-shot (`shot`) tasks on D-dim embeddings.

    Like the original, one module serves one (N, K, D): the classifier-weight sampling
    offset depends on N and D, and the support layout [N, K, D] is fixed; the number of
    query examples per class is free."""

    def __init__(self, way, shot, embedding_dim, num_latents=64, inner_unroll_length=5,
                 finetuning_unroll_length=5, inner_lr_init=1.0, finetuning_lr_init=0.001,
                 dropout_rate=0.5, kl_weight=1e-3, encoder_penalty_weight=1e-9,
                 l2_penalty_weight=1e-8, orthogonality_penalty_weight=1e-3,
                 use_64bits_dtype=True, original_kl_estimate=False, name='leo'):
        super().__init__(name=name)
        if inner_unroll_length < 1:
            raise ValueError(f'inner_unroll_length must be >= 1, got {inner_unroll_length}')
        if finetuning_unroll_length < 0:
            raise ValueError(f'finetuning_unroll_length must be >= 0, got '
                             f'{finetuning_unroll_length}')
        if not 0 <= dropout_rate < 1:
            raise ValueError(f'dropout_rate must be in [0, 1), got {dropout_rate}')
        self.way, self.shot, self.embedding_dim = int(way), int(shot), int(embedding_dim)
        self.num_latents = int(num_latents)
        self.inner_unroll_length = int(inner_unroll_length)
        self.finetuning_unroll_length = int(finetuning_unroll_length)
        self.dropout_rate = float(dropout_rate)
        self.kl_weight = float(kl_weight)
        self.encoder_penalty_weight = float(encoder_penalty_weight)
        self.l2_penalty_weight = float(l2_penalty_weight)
        self.orthogonality_penalty_weight = float(orthogonality_penalty_weight)
        self.dtype = tf.float64 if use_64bits_dtype else tf.float32
        self.original_kl_estimate = bool(original_kl_estimate)
        # "Glorot-like": the weights' sigma at u = 0 is the Glorot std of an N x D layer.
        self.stddev_offset = math.sqrt(2. / (self.way + self.embedding_dim))
        L, D = self.num_latents, self.embedding_dim
        self.encoder_linear = snt.Linear(L, with_bias=False, w_init=glorot_uniform(),
                                         name='encoder')
        self.relation_mlp = snt.nets.MLP([2 * L] * 3, w_init=glorot_uniform(), with_bias=False,
                                         activate_final=False, name='relation_network')
        self.decoder_linear = snt.Linear(2 * D, with_bias=False, w_init=glorot_uniform(),
                                         name='decoder')
        # Variables now, in the module's dtype (Sonnet creates them at the first call).
        self.encoder_linear(tf.zeros([1, D], self.dtype))
        self.relation_mlp(tf.zeros([1, 2 * L], self.dtype))
        self.decoder_linear(tf.zeros([1, L], self.dtype))
        # [1, 1, L] and [1, 1, D] as the original; they broadcast over [T, N, K, .].
        self.inner_lr = tf.Variable(tf.fill([1, 1, L], tf.constant(inner_lr_init, self.dtype)),
                                    name='leo_inner_lr')
        self.finetuning_lr = tf.Variable(
            tf.fill([1, 1, D], tf.constant(finetuning_lr_init, self.dtype)), name='finetuning_lr')

    # ---- variables -------------------------------------------------------------------
    @property
    def weight_matrices(self):
        """The five regularised matrices: encoder, relation network (3), decoder."""
        return [self.encoder_linear.w, *[layer.w for layer in self.relation_mlp._layers],
                self.decoder_linear.w]

    @property
    def outer_variables(self):
        """The seven meta-learned variables, in the original's order."""
        return [*self.weight_matrices, self.inner_lr, self.finetuning_lr]

    # ---- sub-networks ----------------------------------------------------------------
    @staticmethod
    def noise(shape, dtype):
        """The standard normal draws of the reparameterised samples (a test may replace it
        with fixed values)."""
        return tf.random.normal(shape, dtype=dtype)

    @staticmethod
    def keep_mask(shape, rate, dtype):
        """Dropout's keep mask, uniform >= rate as tf.nn.dropout draws it (a test may replace
        it with fixed masks)."""
        return tf.random.uniform(shape, dtype=dtype) >= rate

    def dropout(self, x, training):
        """tf.nn.dropout's computation, where(keep, x * (1 / (1 - rate)), 0), with the mask
        from keep_mask."""
        if training and self.dropout_rate > 0:
            scale = tf.constant(1. / (1. - self.dropout_rate), x.dtype)
            return tf.where(self.keep_mask(tf.shape(x), self.dropout_rate, x.dtype), x * scale,
                            tf.zeros([], x.dtype))
        return x

    @staticmethod
    def _on_last_axis(layer, x):
        shape = tf.shape(x)
        y = layer(tf.reshape(x, [-1, x.shape[-1]]))
        return tf.reshape(y, tf.concat([shape[:-1], [y.shape[-1]]], 0))

    def encoder(self, x, training):
        """[T, N, K, D] -> codes [T, N, K, L]."""
        return self._on_last_axis(self.encoder_linear, self.dropout(x, training))

    def relation_network(self, codes):
        """[T, N, K, L] -> [T, N, K, 2L]: the MLP of every ordered pair (i, j) of the N*K
        codes, concat(code_i, code_j), averaged over the partners j."""
        t, n, k, L = tf.shape(codes)[0], self.way, self.shot, self.num_latents
        flat = tf.reshape(codes, [t, n * k, L])
        left = tf.tile(flat[:, :, None, :], [1, 1, n * k, 1])
        right = tf.tile(flat[:, None, :, :], [1, n * k, 1, 1])
        pairs = self._on_last_axis(self.relation_mlp, tf.concat([left, right], -1))
        return tf.reshape(tf.reduce_mean(pairs, 2), [t, n, k, 2 * L])

    @staticmethod
    def average_codes_per_class(codes):
        """The mean over the K examples of each class, tiled back to [T, N, K, 2L]."""
        mean = tf.reduce_mean(codes, 2, keepdims=True)
        return tf.tile(mean, [1, 1, tf.shape(codes)[2], 1])

    def possibly_sample(self, distribution_params, training, stddev_offset=0.):
        """(sample, per-episode KL [T]). The last axis holds [means, u];
        sigma = max(exp(u) - (1 - offset), 1e-10). At meta-train one reparameterised draw per
        entry and the single-sample estimate mean(log N(z; mu, sigma) - log N(z; 0, 1)); at
        meta-test the means and KL 0."""
        means, u = tf.split(distribution_params, 2, axis=-1)
        if not training:
            return means, tf.zeros(tf.shape(means)[:1], means.dtype)
        sigma = tf.maximum(tf.exp(u) - (1. - stddev_offset), SIGMA_FLOOR)
        eps = self.noise(tf.shape(means), means.dtype)
        z = means + sigma * eps
        # (z - mu) / sigma is eps, value and gradient (the two paths through z cancel, and
        # none reaches u through the floor). Written as eps it keeps its precision where
        # sigma sits at the 1e-10 floor; the original's tfp Normal.log_prob computes
        # (z / sigma - mu / sigma)^2, rounding noise of mu / 1e-10 there (0 in float32: the
        # entry's eps^2 / 2 is lost from the KL's value). original_kl_estimate computes it
        # that way: only the KL's value differs, never its gradient.
        if self.original_kl_estimate:
            log_q = (-0.5 * tf.math.squared_difference(z / sigma, means / sigma)
                     - tf.math.log(sigma))
        else:
            log_q = -0.5 * tf.square(eps) - tf.math.log(sigma)
        log_prior = -0.5 * tf.square(z)   # the 1/2 log(2 pi) of both cancel
        return z, tf.reduce_mean(log_q - log_prior, axis=[1, 2, 3])

    def decoder(self, latents):
        """[T, N, K, L] -> the classifier weights' distribution parameters [T, N, K, 2D]."""
        return self._on_last_axis(self.decoder_linear, latents)

    def forward_decoder(self, latents, training):
        """Classifier weights [T, N, K, D]: sampled at meta-train, the means at meta-test."""
        weights, _ = self.possibly_sample(self.decoder(latents), training, self.stddev_offset)
        return weights

    def predict(self, x, weights, training):
        """Logits [T, N', K', N] of x [T, N', K', D]: the mean over the K weight copies of
        <x, W_c,m>, i.e. <x, mean_m W_c,m>."""
        return tf.einsum('tijd,tcd->tijc', self.dropout(x, training),
                         tf.reduce_mean(weights, 2))

    def loss_fn(self, logits, labels):
        """Per-example softmax cross-entropy [T, N', K'] with one-hot labels."""
        onehot = tf.one_hot(labels, self.way, dtype=logits.dtype)
        return tf.nn.softmax_cross_entropy_with_logits(onehot, logits)

    # ---- inner loops -----------------------------------------------------------------
    def leo_inner_loop(self, x, y, latents, training):
        """z_T after T steps z <- z - alpha * d(sum of support CE)/dz; returns (z_T, W_T)
        with W_T decoded (and sampled) from z_T."""
        z = latents
        for _ in range(self.inner_unroll_length):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(z)
                loss = tf.reduce_sum(self.loss_fn(
                    self.predict(x, self.forward_decoder(z, training), training), y))
            z = z - self.inner_lr * tape.gradient(loss, z)
        return z, self.forward_decoder(z, training)

    def finetuning_inner_loop(self, x, y, weights, training):
        """W after F steps W <- W - beta * d(sum of support CE)/dW. The first step's loss is
        the support loss of W_T (the original computes it at the end of the LEO loop, with
        one dropout mask, and starts here from it); the loss after the last step is never
        used, so it is not computed."""
        for _ in range(self.finetuning_unroll_length):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(weights)
                loss = tf.reduce_sum(self.loss_fn(self.predict(x, weights, training), y))
            weights = weights - self.finetuning_lr * tape.gradient(loss, weights)
        return weights

    # ---- penalties -------------------------------------------------------------------
    def l2_penalty(self):
        """lambda_1 * 1/2 * sum of w^2 over the five weight matrices (tf.nn.l2_loss)."""
        return self.l2_penalty_weight * tf.add_n([0.5 * tf.reduce_sum(tf.square(w))
                                                  for w in self.weight_matrices])

    def orthogonality_penalty(self):
        """lambda_2 * mean((C - I)^2), C the correlations of the decoder's L rows (each of
        length 2D: means and pre-scales together), diagonal included."""
        w = self.decoder_linear.w
        norms = tf.norm(w, axis=1, keepdims=True) + ROW_NORM_EPS
        corr = tf.matmul(w, w, transpose_b=True) / tf.matmul(norms, norms, transpose_b=True)
        identity = tf.eye(self.num_latents, dtype=w.dtype)
        return self.orthogonality_penalty_weight * tf.reduce_mean(tf.square(corr - identity))

    # ---- episodes --------------------------------------------------------------------
    def _class_major(self, x, y, per_class=None):
        """[T, N*k, D] / [T, N*k] (class-major, label = class position) -> [T, N, k, D] /
        [T, N, k]."""
        k = -1 if per_class is None else per_class
        x = tf.reshape(tf.cast(x, self.dtype), [tf.shape(x)[0], self.way, k, self.embedding_dim])
        return x, tf.reshape(y, [tf.shape(y)[0], self.way, k])

    def episode_losses(self, xs, ys, xq, yq, training):
        """Per-episode (loss [T], query accuracy [T], parts) for a metabatch given as the
        samplers give it: xs [T, N*K, D], ys [T, N*K], xq [T, N*V, D], yq [T, N*V], class
        after class. parts: per-episode cent, kl, encoder_penalty [T]; l2, orthogonality
        (scalars, the same in every episode)."""
        xs, ys = self._class_major(xs, ys, self.shot)
        xq, yq = self._class_major(xq, yq)
        codes = self.average_codes_per_class(self.relation_network(self.encoder(xs, training)))
        latents, kl = self.possibly_sample(codes, training)
        adapted, weights = self.leo_inner_loop(xs, ys, latents, training)
        if training:
            encoder_penalty = tf.reduce_mean(
                tf.square(latents - tf.stop_gradient(adapted)), axis=[1, 2, 3])
        else:
            encoder_penalty = tf.zeros_like(kl)
        weights = self.finetuning_inner_loop(xs, ys, weights, training)
        logits = self.predict(xq, weights, training)
        cent = tf.reduce_mean(self.loss_fn(logits, yq), axis=[1, 2])
        correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), yq)
        acc = tf.reduce_mean(tf.cast(correct, tf.float32), axis=[1, 2])
        l2, ortho = self.l2_penalty(), self.orthogonality_penalty()
        loss = (cent + self.kl_weight * kl + self.encoder_penalty_weight * encoder_penalty
                + l2 + ortho)
        return loss, acc, dict(cent=cent, kl=kl, encoder_penalty=encoder_penalty, l2=l2,
                               orthogonality=ortho)

    def metabatch_loss(self, xs, ys, xq, yq, training):
        """(mean loss, per-episode accuracy [T], means of cent and kl): what the shared
        compiled train step differentiates."""
        loss, acc, parts = self.episode_losses(xs, ys, xq, yq, training)
        return tf.reduce_mean(loss), acc, dict(cent=tf.reduce_mean(parts['cent']),
                                               kl=tf.reduce_mean(parts['kl']))

    def task_loss(self, xs, ys, xq, yq, training):
        """One episode (no leading axis): (loss, accuracy)."""
        loss, acc, _ = self.episode_losses(xs[None], ys[None], xq[None], yq[None], training)
        return loss[0], acc[0]


# ---- the outer update ------------------------------------------------------------------
def nan_fallback_gradients(model, original_bug=False):
    """What replaces the meta-gradient of a step whose loss or gradient is not finite.

    Intended (leo model.py's docstring): the gradient of (1e-4 / lambda_1) * L2, i.e.
    1e-4 * W for the five weight matrices, and 0 for the two step sizes. The original's list
    comprehension swaps its loop names and returns every variable's own value instead
    (original_bug=True reproduces that)."""
    if original_bug:
        return [tf.identity(v) for v in model.outer_variables]
    fallback = [NAN_FALLBACK_SCALE * w for w in model.weight_matrices]
    return fallback + [tf.zeros_like(model.inner_lr), tf.zeros_like(model.finetuning_lr)]


def make_outer_update(model, optimizer, gradient_threshold=0.1, gradient_norm_threshold=0.1,
                      original_nan_guard=False):
    """(loss, grads) -> applied: the original's outer step. If the loss or a gradient is NaN
    (or +-Inf, unless original_nan_guard: the original checks NaN only) the fallback
    gradients replace the meta-gradient; then each tensor is clipped to
    [-gradient_threshold, gradient_threshold] and to norm gradient_norm_threshold (per tensor,
    not globally; a threshold <= 0 skips that clip) and Adam applies them. `applied` is False
    when the fallback was used. A variable with no gradient (F = 0 leaves beta out) is not
    updated."""
    check = tf.math.is_nan if original_nan_guard else (lambda x: tf.logical_not(tf.math.is_finite(x)))

    def update(loss, grads):
        have = [i for i, g in enumerate(grads) if g is not None]
        present = [grads[i] for i in have]
        bad = tf.reduce_any(tf.stack([tf.reduce_any(check(x)) for x in [loss, *present]]))

        def fallback():   # computed only on a bad step
            f = nan_fallback_gradients(model, original_nan_guard)
            return [tf.cast(f[i], grads[i].dtype) for i in have]

        picked = iter(tf.cond(bad, fallback, lambda: present))
        chosen = [next(picked) if g is not None else None for g in grads]
        clipped = []
        for g in chosen:
            if g is not None and gradient_threshold > 0:
                g = tf.clip_by_value(g, -gradient_threshold, gradient_threshold)
            if g is not None and gradient_norm_threshold > 0:
                g = tf.clip_by_norm(g, gradient_norm_threshold)
            clipped.append(g)
        optimizer.apply(clipped)
        return tf.logical_not(bad)

    return update
