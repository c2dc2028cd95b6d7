"""Reference LEO meta-train step in PyTorch (functional params, eager) for speed anchoring.

A corrected copy of ../shared/bench/torch_leo.py, which benchmarks/throughput.py runs in its
place. The one difference: the shared script's `decode` draws the weights with `sample`, which
also computes the draw's KL term (five elementwise ops and a mean over [T, N, K, D], recorded
by autograd) at all 6 decodes of a step and throws it away; the original discards that KL,
and the project's compiled step never computes it (TensorFlow prunes ops whose result is not
used). Here `decode` draws the weights only, so both sides do the same work. Everything else,
flags and output included, is the shared script's.

LEO (Rusu et al. 2019) as deepmind/leo model.py and the project's model/leo.py compute it, on
random unit-norm embeddings; the T episodes of a metabatch are one batched computation
(leading axis T), as the project's `LEO.metabatch_loss` does:
- encoder: dropout on the support embeddings, linear D -> L (no bias);
- relation network: MLP 2L-2L-2L (ReLU between layers, none after the last, no bias) on
  concat(code_i, code_j) for all (NK)^2 ordered pairs, mean over the partner j; mean over the
  K examples of each class, tiled back;
- latents: means and pre-scale u, sigma = max(exp(u) - 1, 1e-10), one reparameterised draw;
  KL = mean(log N(z; mu, sigma) - log N(z; 0, 1)) over the N*K*L draws;
- decoder: linear L -> 2D (no bias), weights sampled with
  sigma = max(exp(u) - 1 + sqrt(2 / (N + D)), 1e-10), fresh noise at every decoder call
  (the decoder-side KL is discarded by the original and not computed);
- prediction: logits = <dropout(x), mean over the K weight copies>, a fresh dropout mask at
  every call; inner losses are the SUM of support cross-entropies over the metabatch;
- 5 latent steps z <- z - alpha * dL/dz (alpha learned, [1, 1, L]) with a decode before each
  loss and one after the last step, then 5 fine-tuning steps W <- W - beta * dL/dW (beta
  learned, [1, 1, D]), all with create_graph=True (second order through both loops);
- episode loss: mean query CE + kl_weight * KL + encoder_penalty_weight *
  mean((z_0 - z_T.detach())^2) + l2_penalty_weight * 1/2 sum of squares of the 5 matrices +
  orthogonality_penalty_weight * mean((C - I)^2), C the row correlations of the decoder;
  the metabatch loss is the mean over episodes;
- outer update: gradient of that mean w.r.t. the 7 variables; if the loss or a gradient is
  not finite, the fallback (1e-4 * W, 0 for the step sizes); per-tensor clipping by value to
  0.1 then by norm to 0.1; Adam (lr 1e-4, eps 1e-8).

Matches benchmarks/throughput.py config `leo_mini5_1shot` (model/leo.py LEO module defaults,
as the config builds it, with optim.Adam(1e-4) and leo.make_outer_update's default
thresholds): way 5, shot 1, query 15 per class, metabatch 12, dim 640, num_latents 64,
inner_unroll_length 5, finetuning_unroll_length 5, dropout_rate 0.5, kl_weight 1e-3,
encoder_penalty_weight 1e-9, l2_penalty_weight 1e-8, orthogonality_penalty_weight 1e-3,
inner_lr_init 1.0, finetuning_lr_init 1e-3, float32. `--shot 5` matches `leo_mini5_5shot`
and `--float64` `leo_mini5_1shot_f64`. (runfiles/leo_mini_1shot.sh's tuned penalty weights,
dropout 0.308 and outer lr 2.7e-4 change values only, not the computation.)

Prints one line: 'torch steps/s X' (mean over --iters timed steps after --warmup steps).
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument('--way', type=int, default=5); p.add_argument('--shot', type=int, default=1)
p.add_argument('--query', type=int, default=15); p.add_argument('--metabatch', type=int, default=12)
p.add_argument('--dim', type=int, default=640); p.add_argument('--num_latents', type=int, default=64)
p.add_argument('--steps', type=int, default=5, help='latent (LEO) inner steps')
p.add_argument('--finetuning_steps', type=int, default=5)
p.add_argument('--dropout', type=float, default=0.5); p.add_argument('--outer_lr', type=float, default=1e-4)
p.add_argument('--float64', action='store_true')
p.add_argument('--iters', type=int, default=20); p.add_argument('--warmup', type=int, default=3)
p.add_argument('--threads', type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
dtype = torch.float64 if a.float64 else torch.float32
N, K, D, L, T = a.way, a.shot, a.dim, a.num_latents, a.metabatch
KL_W, ENC_W, L2_W, ORTHO_W = 1e-3, 1e-9, 1e-8, 1e-3
CLIP, CLIP_NORM = 0.1, 0.1
OFFSET = math.sqrt(2. / (N + D))


def glorot(fan_in, fan_out):
    lim = math.sqrt(6. / (fan_in + fan_out))
    return (torch.rand(fan_in, fan_out, dtype=dtype) * 2 - 1).mul_(lim).requires_grad_()


mats = [glorot(D, L), glorot(2 * L, 2 * L), glorot(2 * L, 2 * L), glorot(2 * L, 2 * L),
        glorot(L, 2 * D)]          # encoder, relation network (3), decoder: [in, out]
enc, rel, dec = mats[0], mats[1:4], mats[4]
inner_lr = torch.full((1, 1, L), 1.0, dtype=dtype, requires_grad=True)
ft_lr = torch.full((1, 1, D), 1e-3, dtype=dtype, requires_grad=True)
params = mats + [inner_lr, ft_lr]
opt = torch.optim.Adam(params, a.outer_lr, eps=1e-8)
eye = torch.eye(L, dtype=dtype)


def drop(x):
    return F.dropout(x, a.dropout, training=True) if a.dropout > 0 else x


def draw(dist, offset):
    """(reparameterised draw, sigma, eps) of [means, u] on the last axis."""
    means, u = dist.chunk(2, -1)
    sigma = (u.exp() - (1. - offset)).clamp_min(1e-10)
    eps = torch.randn_like(means)
    return means + sigma * eps, sigma, eps


def sample(dist, offset):
    """(reparameterised draw, per-episode KL [T]) of [means, u] on the last axis."""
    z, sigma, eps = draw(dist, offset)
    # log q - log prior = -eps^2/2 - log sigma + z^2/2 (the 1/2 log 2pi terms cancel)
    return z, (0.5 * (z.square() - eps.square()) - sigma.log()).mean((1, 2, 3))


def decode(z):
    """[T, N, K, L] -> sampled classifier weights [T, N, K, D] (no KL: it is not used)."""
    return draw(z @ dec, OFFSET)[0]


def predict(x, w):
    """x [T, N', K', D], weights [T, N, K, D] -> logits [T, N', K', N]."""
    return torch.einsum('tijd,tcd->tijc', drop(x), w.mean(2))


def ce(logits, y, reduction):
    return F.cross_entropy(logits.reshape(-1, N), y.reshape(-1), reduction=reduction)


def metabatch_loss(xs, ys, xq, yq):
    codes = drop(xs) @ enc                                        # [T, N, K, L]
    flat = codes.reshape(T, N * K, L)
    pairs = torch.cat([flat[:, :, None].expand(-1, -1, N * K, -1),
                       flat[:, None].expand(-1, N * K, -1, -1)], -1)   # [T, NK, NK, 2L]
    h = F.relu(pairs @ rel[0])
    h = F.relu(h @ rel[1])
    h = (h @ rel[2]).mean(2).reshape(T, N, K, 2 * L)
    h = h.mean(2, keepdim=True).expand(-1, -1, K, -1)
    latents, kl = sample(h, 0.)
    z = latents
    for _ in range(a.steps):
        loss = ce(predict(xs, decode(z)), ys, 'sum')
        z = z - inner_lr * torch.autograd.grad(loss, z, create_graph=True)[0]
    w = decode(z)
    for _ in range(a.finetuning_steps):
        loss = ce(predict(xs, w), ys, 'sum')
        w = w - ft_lr * torch.autograd.grad(loss, w, create_graph=True)[0]
    cent = ce(predict(xq, w), yq, 'none').reshape(T, -1).mean(1)
    enc_pen = (latents - z.detach()).square().mean((1, 2, 3))
    l2 = L2_W * sum(0.5 * m.square().sum() for m in mats)
    norms = dec.norm(dim=1, keepdim=True) + 1e-32
    corr = (dec @ dec.T) / (norms @ norms.T)
    ortho = ORTHO_W * (corr - eye).square().mean()
    return (cent + KL_W * kl + ENC_W * enc_pen).mean() + l2 + ortho


def step(xs, ys, xq, yq):
    loss = metabatch_loss(xs, ys, xq, yq)
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        finite = torch.stack([torch.isfinite(loss)] + [torch.isfinite(g).all() for g in grads])
        if not bool(finite.all()):   # LEO's NaN guard: the L2 fallback gradient
            grads = [1e-4 * m for m in mats] + [torch.zeros_like(inner_lr), torch.zeros_like(ft_lr)]
        for v, g in zip(params, grads):
            g = g.clamp(-CLIP, CLIP)
            v.grad = g * (CLIP_NORM / g.norm().clamp_min(CLIP_NORM))   # tf.clip_by_norm
    opt.step()
    return loss.item()


def unit(n):
    x = torch.randn(T, N, n, D, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def batch():
    ys = torch.arange(N).repeat_interleave(K).reshape(1, N, K).expand(T, -1, -1)
    yq = torch.arange(N).repeat_interleave(a.query).reshape(1, N, a.query).expand(T, -1, -1)
    return unit(K), ys, unit(a.query), yq


data = [batch() for _ in range(4)]
for i in range(a.warmup): step(*data[i % 4])
t = time.perf_counter()
for i in range(a.iters): step(*data[i % 4])
dt = time.perf_counter() - t
print(f'torch steps/s {a.iters / dt:.3f}')
