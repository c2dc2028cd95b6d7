"""PyTorch reference for meta-test throughput: the network of ../shared/bench/torch_maml.py
(Conv4: 3x3 'same' conv, batch norm with batch statistics and a learned shift only, ReLU,
2x2 max-pool; dense head), adapted on each test episode's support set with plain gradient
steps (no graph kept: nothing is differentiated through them) and scored on its query set.

Prints one line: 'torch test episodes/s X' (mean over --episodes after 2 warm-up episodes).
"""
import argparse
import resource
import time

import torch
import torch.nn.functional as F


def parse():
    p = argparse.ArgumentParser()
    for name, default in (('way', 20), ('shot', 1), ('query', 15), ('steps', 5), ('xdim', 28),
                          ('ch', 1), ('nch', 64), ('episodes', 20), ('threads', 2)):
        p.add_argument('--' + name, type=int, default=default)
    p.add_argument('--inner_lr', type=float, default=0.1)
    return p.parse_args()


def main():
    a = parse()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    size = a.xdim
    for _ in range(4):
        size //= 2
    theta = {}
    for l in range(1, 5):
        theta[f'c{l}w'] = torch.randn(a.nch, a.ch if l == 1 else a.nch, 3, 3) * 0.02
        theta[f'c{l}b'] = torch.zeros(a.nch)
    theta['dw'] = torch.randn(size * size * a.nch, a.way) * 0.02
    theta['db'] = torch.zeros(a.way)
    beta = [torch.zeros(a.nch) for _ in range(4)]

    def forward(x, p):
        for l in range(1, 5):
            x = F.conv2d(x, p[f'c{l}w'], p[f'c{l}b'], padding=1)
            x = F.batch_norm(x, None, None, None, beta[l - 1], training=True)
            x = F.max_pool2d(F.relu(x), 2)
        return x.flatten(1) @ p['dw'] + p['db']

    ys = torch.arange(a.way).repeat_interleave(a.shot)
    yq = torch.arange(a.way).repeat_interleave(a.query)

    def episode():
        xs = torch.randn(a.way * a.shot, a.ch, a.xdim, a.xdim)
        xq = torch.randn(a.way * a.query, a.ch, a.xdim, a.xdim)
        fast = {k: v.clone().requires_grad_() for k, v in theta.items()}
        for _ in range(a.steps):
            loss = F.cross_entropy(forward(xs, fast), ys)
            grads = torch.autograd.grad(loss, list(fast.values()))
            fast = {k: (v - a.inner_lr * g).detach().requires_grad_()
                    for (k, v), g in zip(fast.items(), grads)}
        with torch.no_grad():
            return (forward(xq, fast).argmax(1) == yq).float().mean().item()

    for _ in range(2):
        episode()
    t = time.perf_counter()
    for _ in range(a.episodes):
        episode()
    print(f'torch test episodes/s {a.episodes / (time.perf_counter() - t):.3f}')
    print(f'maxrss_kb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}')


if __name__ == '__main__':
    main()
