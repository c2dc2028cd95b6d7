"""Pictures from `python main.py --mode export`: decision boundaries and stochastic features.

    python plot.py --savedir DIR [--episodes 0,3 | 4] [--steps 1] [--seed 0] [--dpi 300] ...

Decision boundaries (metadrop's plot.py, from `<savedir>/export.npz`, else the original's
`<savedir>/export.pkl`): for every episode i and inner-step snapshot s one figure
`<savedir>/<out>/step{s}/{i}.png`. The x-axis is the projection of a feature h on the unit
normal of the 2-way decision boundary, u = (w0 - w1) / |w0 - w1|, so the boundary is the
vertical line x = (b1 - b0) / |w0 - w1| and class 0 lies to its right. The y-axis is a
one-dimensional t-SNE (seeded, unlike the original) of what is left, h - (h.u) u, fitted
on the support, query and, for Meta-Dropout, the noisy support samples together. The
original drew shot index k with marker k of a two-entry list and so failed for shot > 2;
here the marker list is longer and cycled.

Stochastic features (Meta-Dropout, from `<savedir>/stochastic.npz`): for every input image
and layer, a PNG with the noise-free map and several noisy samples of the channels whose
samples vary most, one animated GIF per such channel, and `summary.png` for a README.

Needs matplotlib and scikit-learn: pip install -e ".[plot]".
"""
import argparse
import math
import os
import pickle
import sys

import numpy as np

EXPORT_NPZ = 'export.npz'
EXPORT_PKL = 'export.pkl'
STOCHASTIC_NPZ = 'stochastic.npz'

CLASS_COLOURS = ('firebrick', 'royalblue')
# Marker of the k-th support example of a class (cycled); the original had only 'o' and '^'.
SHOT_MARKERS = ('o', '^', 's', 'D', 'v', 'p', 'h', '<', '>', '8', 'P', 'X', 'd', 'H')
POINT_SIZE = 300
SUMMARY_SAMPLES = 4  # noisy samples per layer in summary.png

# Symbolic shape of every export array; a name shared by two arrays must have one value.
EXPORT_DIMS = {
    'htr': ('E', 'S+1', '2*shot', 'F'),
    'hte': ('E', 'S+1', '2*query', 'F'),
    'w': ('E', 'S+1', 'F', '2'),
    'b': ('E', 'S+1', '2'),
    'ytr': ('E', '2*shot'),
    'yte': ('E', '2*query'),
    'classes': ('E', '2'),
    'htr_sample': ('E', 'S+1', 'M', '2*shot', 'F'),
}
EXPORT_REQUIRED = ('htr', 'hte', 'w', 'b', 'ytr', 'yte')
EXPORT_FLOAT = ('htr', 'hte', 'w', 'b', 'htr_sample')


class PlotInputError(ValueError):
    """An input file that is missing, unreadable or has arrays of inconsistent shapes."""


def _matplotlib():
    """pyplot on the Agg backend and sklearn's TSNE, or a clear SystemExit."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        from sklearn.manifold import TSNE
    except ImportError as e:
        raise SystemExit(f'plot.py needs matplotlib and scikit-learn ({e}); install them with: '
                         'pip install -e ".[plot]"')
    return plt, TSNE


# --------------------------------------------------------------------------- loading

def check_shapes(arrays, dims, source):
    """Checks that every array has its symbolic shape with one value per symbol."""
    bound = {}  # symbol -> (value, array name)
    for name, spec in dims.items():
        if name not in arrays:
            continue
        shape = arrays[name].shape
        if len(shape) != len(spec):
            raise PlotInputError(f'{source}: {name} has shape {list(shape)}, expected {len(spec)} '
                                 f'dimensions [{", ".join(spec)}]')
        for axis, (sym, n) in enumerate(zip(spec, shape)):
            if sym.isdigit():
                if n != int(sym):
                    raise PlotInputError(f'{source}: {name} has shape {list(shape)}; axis {axis} '
                                         f'must be {sym} ([{", ".join(spec)}])')
            elif sym not in bound:
                bound[sym] = (n, name)
            elif bound[sym][0] != n:
                other = bound[sym][1]
                raise PlotInputError(
                    f'inconsistent shapes in {source}: {other} {list(arrays[other].shape)} and '
                    f'{name} {list(shape)} disagree on {sym} ({bound[sym][0]} vs {n})')
    return {sym: v for sym, (v, _) in bound.items()}


def _as_numeric(name, value, source):
    a = np.asarray(value)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise PlotInputError(f'{source}: {name} is not a numeric array (dtype {a.dtype})')
    return a


def _read_npz(path, keys=None):
    """Arrays of an npz file without unpickling anything."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files) if keys is None else [k for k in keys if k in z.files]
            return {k: z[k] for k in names}
    except ValueError as e:  # an object array inside the npz
        raise PlotInputError(f'{path}: cannot read without unpickling ({e})')
    except (OSError, EOFError) as e:
        raise PlotInputError(f'{path}: not a readable npz file ({e})')


def load_export(savedir):
    """The export arrays stacked over episodes (the `export.npz` layout), checked.

    Reads `<savedir>/export.npz`, or else the original's `<savedir>/export.pkl` (a list of
    per-episode dicts; unpickling can run code, so a warning is printed). Returns a dict
    with htr, hte, w, b, ytr, yte, optionally classes and htr_sample (Meta-Dropout), and
    'source' (the path read). Raises PlotInputError naming the offending arrays.
    """
    npz = os.path.join(savedir, EXPORT_NPZ)
    pkl = os.path.join(savedir, EXPORT_PKL)
    if os.path.isfile(npz):
        source = npz
        raw = _read_npz(npz, EXPORT_DIMS)
    elif os.path.isfile(pkl):
        source = pkl
        print(f'warning: {pkl} is a pickle, and unpickling can run code: load only files you '
              f'trust ({EXPORT_NPZ} is read without that risk)', file=sys.stderr)
        try:
            with open(pkl, 'rb') as f:
                episodes = pickle.load(f)
        except Exception as e:  # noqa: BLE001 - any failure means an unusable file
            raise PlotInputError(f'{pkl}: cannot be unpickled ({type(e).__name__}: {e})')
        if isinstance(episodes, dict):
            episodes = [episodes]
        if not isinstance(episodes, (list, tuple)) or not episodes or \
                not all(isinstance(d, dict) for d in episodes):
            raise PlotInputError(f'{pkl}: expected a non-empty list of per-episode dicts')
        raw = {}
        for key in EXPORT_DIMS:
            have = [key in d for d in episodes]
            if not any(have):
                continue
            if not all(have):
                raise PlotInputError(f'{pkl}: {key} is in some episodes but not in others')
            parts = [np.asarray(d[key]) for d in episodes]
            shapes = {p.shape for p in parts}
            if len(shapes) > 1:
                raise PlotInputError(f'inconsistent shapes in {pkl}: {key} differs between '
                                     f'episodes ({sorted(list(s) for s in shapes)})')
            raw[key] = np.stack(parts)
    else:
        raise PlotInputError(f'{savedir} has no {EXPORT_NPZ} or {EXPORT_PKL}')

    missing = [k for k in EXPORT_REQUIRED if k not in raw]
    if missing:
        raise PlotInputError(f'{source} lacks the array(s) {", ".join(missing)}')
    arrays = {k: _as_numeric(k, v, source) for k, v in raw.items()}
    check_shapes(arrays, EXPORT_DIMS, source)
    for k in ('ytr', 'yte'):
        if not np.all(np.isin(arrays[k], (0, 1))):
            raise PlotInputError(f'{source}: {k} must hold 2-way labels 0 and 1, found '
                                 f'{np.unique(arrays[k]).tolist()}')
        arrays[k] = arrays[k].astype(np.int64)
    for k in EXPORT_FLOAT:
        if k in arrays:
            arrays[k] = arrays[k].astype(np.float64)
            if not np.all(np.isfinite(arrays[k])):
                raise PlotInputError(f'{source}: {k} has NaN or infinite values')
    if arrays['htr'].shape[0] == 0 or arrays['htr'].shape[1] == 0:
        raise PlotInputError(f'{source}: no episodes or no snapshots (htr has shape '
                             f'{list(arrays["htr"].shape)})')
    arrays['source'] = source
    return arrays


def load_stochastic(savedir):
    """`<savedir>/stochastic.npz` checked: (images, {layer: (samples, mean)}).

    images [n_img, H, W, C] with C 1 or 3; samples [n_img, n_samp, H_l, W_l, C_l];
    mean [n_img, H_l, W_l, C_l].
    """
    path = os.path.join(savedir, STOCHASTIC_NPZ)
    if not os.path.isfile(path):
        raise PlotInputError(f'{savedir} has no {STOCHASTIC_NPZ}')
    raw = _read_npz(path)
    for key in ('images', 'layers'):
        if key not in raw:
            raise PlotInputError(f'{path} lacks the array {key}')
    layers_arr = _as_numeric('layers', raw['layers'], path)
    if layers_arr.ndim != 1 or layers_arr.size == 0 or not np.issubdtype(layers_arr.dtype,
                                                                          np.integer):
        raise PlotInputError(f'{path}: layers must be a non-empty 1-d int array, got dtype '
                             f'{layers_arr.dtype} shape {list(layers_arr.shape)}')
    layers = [int(l) for l in layers_arr]
    dims = {'images': ('n_img', 'H', 'W', 'C')}
    for l in layers:
        for key in (f'layer{l}', f'layer{l}_mean'):
            if key not in raw:
                raise PlotInputError(f'{path} lacks the array {key} (layers lists {layers})')
        dims[f'layer{l}'] = ('n_img', f'n_samp{l}', f'H{l}', f'W{l}', f'C{l}')
        dims[f'layer{l}_mean'] = ('n_img', f'H{l}', f'W{l}', f'C{l}')
    arrays = {k: _as_numeric(k, raw[k], path).astype(np.float64) for k in dims}
    sizes = check_shapes(arrays, dims, path)
    if sizes['C'] not in (1, 3):
        raise PlotInputError(f'{path}: images has shape {list(arrays["images"].shape)}; '
                             f'the channel axis must be 1 or 3')
    if sizes['n_img'] == 0 or any(sizes[f'n_samp{l}'] == 0 or sizes[f'C{l}'] == 0
                                  for l in layers):
        raise PlotInputError(f'{path}: no images, samples or channels to draw')
    for k, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise PlotInputError(f'{path}: {k} has NaN or infinite values')
    maps = {l: (arrays[f'layer{l}'], arrays[f'layer{l}_mean']) for l in layers}
    return arrays['images'], maps


# --------------------------------------------------------------------------- boundaries

def boundary_coordinates(h, w, b):
    """x-coordinates, residuals and boundary position of features h under a 2-way head.

    h [..., F], w [F, 2], b [2]. With u = (w0 - w1) / |w0 - w1|: x = h.u and the residual
    h - x u. logit0 - logit1 = h.(w0 - w1) + b0 - b1 vanishes at x = (b1 - b0) / |w0 - w1|,
    the returned boundary; points with x greater than it are classified as class 0.
    Identical head columns have no boundary: x is then 0 and the boundary NaN.
    """
    h = np.asarray(h, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    diff = w[:, 0] - w[:, 1]
    norm = float(np.linalg.norm(diff))
    if norm == 0.0 or not np.isfinite(norm):
        return np.zeros(h.shape[:-1]), h.copy(), float('nan')
    u = diff / norm
    x = h @ u
    residual = h - x[..., None] * u
    return x, residual, float((b[1] - b[0]) / norm)


def tsne_1d(points, seed=0):
    """A seeded one-dimensional t-SNE of points [N, D] (perplexity clamped below N)."""
    _, TSNE = _matplotlib()
    points = np.asarray(points, dtype=np.float64)
    n = points.shape[0]
    if n < 3 or np.allclose(points, points[0]):
        return np.zeros(n)
    tsne = TSNE(n_components=1, perplexity=float(min(30, n - 1)), random_state=seed,
                init='pca', learning_rate='auto')
    # One OpenMP thread: on a few dozen points more threads only spin, and on a busy machine
    # they make each fit tens of times slower.
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api='openmp'):
        y = tsne.fit_transform(points)[:, 0]
    return y if np.all(np.isfinite(y)) else np.zeros(n)


def shot_indices(labels):
    """Position of each example among the examples of its class (its marker index)."""
    labels = np.asarray(labels)
    out = np.zeros(len(labels), dtype=np.int64)
    seen = {}
    for j, c in enumerate(labels.tolist()):
        out[j] = seen.get(c, 0)
        seen[c] = out[j] + 1
    return out


def plot_episode(htr, hte, w, b, ytr, yte, path, htr_sample=None, seed=0, dpi=300):
    """One decision-boundary figure for one snapshot of one episode, saved to path.

    htr [2*shot, F], hte [2*query, F], w [F, 2], b [2], ytr, yte int labels, and for
    Meta-Dropout htr_sample [M, 2*shot, F] (drawn as the perturbed support points).
    """
    plt, _ = _matplotlib()
    from matplotlib.lines import Line2D

    htr = np.asarray(htr, dtype=np.float64)
    hte = np.asarray(hte, dtype=np.float64)
    ytr = np.asarray(ytr)
    yte = np.asarray(yte)
    n_tr, n_te = len(htr), len(hte)
    parts = [htr, hte]
    if htr_sample is not None:
        htr_sample = np.asarray(htr_sample, dtype=np.float64)
        parts.append(htr_sample.reshape(-1, htr.shape[-1]))
    x, residual, x_boundary = boundary_coordinates(np.concatenate(parts), w, b)
    y = tsne_1d(residual, seed)
    markers = [SHOT_MARKERS[k % len(SHOT_MARKERS)] for k in shot_indices(ytr)]

    fig, ax = plt.subplots(figsize=(8, 6))
    if htr_sample is not None:
        m = htr_sample.shape[0]
        xs = x[n_tr + n_te:].reshape(m, n_tr)
        ys = y[n_tr + n_te:].reshape(m, n_tr)
        for j in range(n_tr):
            ax.scatter(xs[:, j], ys[:, j], s=POINT_SIZE, marker=markers[j],
                       c=CLASS_COLOURS[ytr[j]], alpha=0.5, edgecolors='black',
                       linestyles=':', linewidths=1.5, zorder=0)
    for j in range(n_tr):
        ax.scatter(x[j], y[j], s=POINT_SIZE, marker=markers[j], c=CLASS_COLOURS[ytr[j]],
                   edgecolors='black', linewidths=1.5, zorder=7)
    xq, yq = x[n_tr:n_tr + n_te], y[n_tr:n_tr + n_te]
    for c in (0, 1):
        sel = yte == c
        ax.scatter(xq[sel], yq[sel], s=POINT_SIZE, marker='*', c=CLASS_COLOURS[c],
                   edgecolors='black', linewidths=0.5, zorder=3)
    if np.isfinite(x_boundary):
        ax.axvline(x_boundary, color='black', linestyle='--', linewidth=2, zorder=5)
        lo, hi = min(x.min(), x_boundary), max(x.max(), x_boundary)
        pad = 0.05 * (hi - lo) if hi > lo else 1.0
        ax.set_xlim(lo - pad, hi + pad)

    handles = [Line2D([], [], linestyle='', marker='o', markersize=12, markerfacecolor='grey',
                      markeredgecolor='black', label='train')]
    if htr_sample is not None:
        handles.append(Line2D([], [], linestyle='', marker='o', markersize=12, alpha=0.5,
                              markerfacecolor='grey', markeredgecolor='black',
                              label='perturbed train'))
    handles.append(Line2D([], [], linestyle='', marker='*', markersize=15,
                          markerfacecolor='grey', markeredgecolor='black', label='test'))
    if np.isfinite(x_boundary):
        handles.append(Line2D([], [], color='black', linestyle='--', linewidth=2,
                              label='decision boundary'))
    ax.legend(handles=handles, loc='lower left', fontsize=13)
    ax.axis('off')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches='tight')
    plt.close(fig)
    return path


def plot_export(ex, outdir, episodes=None, steps=None, seed=0, dpi=300):
    """plot_episode for the chosen episodes and snapshots; returns the written paths."""
    n_ep, n_snap = ex['htr'].shape[:2]
    episodes = range(n_ep) if episodes is None else episodes
    steps = range(n_snap) if steps is None else steps
    sample = ex.get('htr_sample')
    paths = []
    for s in steps:
        for i in episodes:
            path = os.path.join(outdir, f'step{s}', f'{i}.png')
            paths.append(plot_episode(ex['htr'][i, s], ex['hte'][i, s], ex['w'][i, s],
                                      ex['b'][i, s], ex['ytr'][i], ex['yte'][i], path,
                                      htr_sample=None if sample is None else sample[i, s],
                                      seed=seed, dpi=dpi))
    return paths


# --------------------------------------------------------------------------- stochastic

def select_channels(samples, n):
    """The n channels of samples [n_samp, H, W, C] whose values vary most across samples.

    Score: the variance over samples, averaged over positions; highest first.
    """
    samples = np.asarray(samples, dtype=np.float64)
    score = samples.var(axis=0).mean(axis=(0, 1))
    order = np.argsort(-score, kind='stable')
    return [int(c) for c in order[:max(1, min(n, len(order)))]]


def _display_image(img):
    """An input image [H, W, C] as floats in [0, 1] with 3 channels (for imshow and GIFs)."""
    img = np.asarray(img, dtype=np.float64)
    lo, hi = img.min(), img.max()
    if lo < -0.05 or hi > 1.05:  # not in [0, 1]: stretch for display
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    img = np.clip(img, 0.0, 1.0)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return img


def _gif_frames(image, maps, vmin, vmax, caption):
    """One RGB frame per map [n, H_l, W_l]: the input image beside the upsampled map."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    scale = max(1, math.ceil(128 / h))
    size = (w * scale, h * scale)
    left = Image.fromarray((image * 255).round().astype(np.uint8)).resize(size, Image.NEAREST)
    cmap = colormaps['viridis']
    gap, bar = 4, 14
    frames = []
    for j, m in enumerate(maps):
        norm = (m - vmin) / (vmax - vmin) if vmax > vmin else np.zeros_like(m)
        rgb = (cmap(np.clip(norm, 0, 1))[..., :3] * 255).round().astype(np.uint8)
        right = Image.fromarray(rgb).resize(size, Image.NEAREST)
        frame = Image.new('RGB', (2 * size[0] + gap, size[1] + bar), 'white')
        frame.paste(left, (0, 0))
        frame.paste(right, (size[0] + gap, 0))
        ImageDraw.Draw(frame).text((2, size[1] + 1), f'{caption} sample {j + 1}/{len(maps)}',
                                   fill='black')
        frames.append(frame)
    return frames


def plot_stochastic(images, maps, outdir, channels=3, n_show=6, dpi=100, duration=250):
    """Stochastic-feature pictures; returns {'png': [...], 'gif': [...], 'summary': path}.

    images [n_img, H, W, C]; maps {layer: (samples [n_img, n_samp, H_l, W_l, C_l],
    mean [n_img, H_l, W_l, C_l])}. For image k and layer l: img{k}_layer{l}.png (input, then
    one row per chosen channel: noise-free map and n_show samples on a shared colour scale)
    and img{k}_layer{l}_ch{c}.gif per chosen channel (input beside each sample in turn).
    summary.png: the first image and, per layer, its highest-variance channel (noise-free map
    and up to SUMMARY_SAMPLES samples).
    """
    plt, _ = _matplotlib()
    os.makedirs(outdir, exist_ok=True)
    written = {'png': [], 'gif': [], 'summary': None}
    layers = list(maps)
    for k in range(images.shape[0]):
        image = _display_image(images[k])
        for l in layers:
            samples, mean = maps[l][0][k], maps[l][1][k]
            chosen = select_channels(samples, channels)
            shown = samples[:max(1, min(n_show, len(samples)))]
            n_col = 1 + len(shown)
            fig = plt.figure(figsize=(1.6 * (n_col + 1.3), 1.6 * len(chosen) + 0.9))
            grid = fig.add_gridspec(len(chosen), n_col + 1, width_ratios=[1.3] + [1] * n_col)
            ax = fig.add_subplot(grid[:, 0])
            ax.imshow(image, interpolation='nearest')
            ax.set_title('input', fontsize=9)
            ax.axis('off')
            for r, c in enumerate(chosen):
                vmin = min(mean[..., c].min(), shown[..., c].min())
                vmax = max(mean[..., c].max(), shown[..., c].max())
                for col in range(n_col):
                    ax = fig.add_subplot(grid[r, col + 1])
                    fmap = mean[..., c] if col == 0 else shown[col - 1][..., c]
                    ax.imshow(fmap, cmap='viridis', vmin=vmin, vmax=vmax,
                              interpolation='nearest')
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if r == 0:
                        ax.set_title('noise-free' if col == 0 else f'sample {col}', fontsize=9)
                    if col == 0:
                        ax.set_ylabel(f'ch {c}', fontsize=9)
            fig.suptitle(f'Image {k}, layer {l}: noise-free feature map and {len(shown)} noisy '
                         f'samples\n(channels whose samples vary most; one colour scale per row)',
                         fontsize=10)
            path = os.path.join(outdir, f'img{k}_layer{l}.png')
            fig.savefig(path, dpi=dpi, bbox_inches='tight')
            plt.close(fig)
            written['png'].append(path)

            for c in chosen:
                vals = samples[..., c]
                frames = _gif_frames(image, vals, vals.min(), vals.max(), f'layer {l} ch {c}')
                gif = os.path.join(outdir, f'img{k}_layer{l}_ch{c}.gif')
                frames[0].save(gif, save_all=True, append_images=frames[1:],
                               duration=duration, loop=0)
                written['gif'].append(gif)

    # README summary: the first image; per layer, its most variable channel, noise-free map
    # on top and (at most SUMMARY_SAMPLES) samples below.
    image = _display_image(images[0])
    n_rows = 1 + max(1, min(n_show, SUMMARY_SAMPLES, min(maps[l][0].shape[1] for l in layers)))
    fig, axes = plt.subplots(n_rows, 1 + len(layers), squeeze=False,
                             figsize=(1.6 * (1 + len(layers)), 1.6 * n_rows + 0.6))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].imshow(image, interpolation='nearest')
    axes[0, 0].set_title('input', fontsize=9)
    for r in range(n_rows):
        if r:
            axes[r, 0].axis('off')
            axes[r, 0].text(0.5, 0.5, f'sample {r}', ha='center', va='center', fontsize=9,
                            transform=axes[r, 0].transAxes)
    for col, l in enumerate(layers, start=1):
        samples, mean = maps[l][0][0], maps[l][1][0]
        c = select_channels(samples, 1)[0]
        shown = samples[:n_rows - 1, ..., c]
        vmin = min(mean[..., c].min(), shown.min())
        vmax = max(mean[..., c].max(), shown.max())
        for r in range(n_rows):
            fmap = mean[..., c] if r == 0 else shown[r - 1]
            axes[r, col].imshow(fmap, cmap='viridis', vmin=vmin, vmax=vmax,
                                interpolation='nearest')
        axes[0, col].set_title(f'layer {l}, ch {c}\nnoise-free', fontsize=9)
    fig.suptitle('Meta-Dropout stochastic features', fontsize=10)
    path = os.path.join(outdir, 'summary.png')
    fig.savefig(path, dpi=dpi, bbox_inches='tight')
    plt.close(fig)
    written['summary'] = path
    return written


# --------------------------------------------------------------------------- CLI

def parse_selection(text, n, flag):
    """'N' -> the first N (at most n) of range(n); 'i,j,...' -> those indices (checked)."""
    if text is None:
        return list(range(n))
    try:
        if ',' in text:
            chosen = [int(t) for t in text.split(',') if t.strip()]
            bad = [i for i in chosen if not 0 <= i < n]
            if bad or not chosen:
                raise SystemExit(f'{flag} {text}: indices must lie in 0..{n - 1} '
                                 f'(the export has {n})')
            return list(dict.fromkeys(chosen))
        count = int(text)
    except ValueError:
        raise SystemExit(f'{flag} {text!r}: give a count N (the first N) or a comma list '
                         f'of indices such as 0,3 (one index: 3,)')
    if count < 1:
        raise SystemExit(f'{flag} {text}: the count must be at least 1')
    return list(range(min(count, n)))


def build_parser():
    p = argparse.ArgumentParser(
        prog='plot.py', description='Decision-boundary and stochastic-feature pictures from '
        '`python main.py --mode export`.')
    p.add_argument('--savedir', required=True,
                   help='folder holding export.npz (or export.pkl) and/or stochastic.npz')
    p.add_argument('--out', default='plot', help='output folder, relative to --savedir')
    p.add_argument('--episodes', default=None,
                   help='N: the first N episodes; i,j,...: those episodes (default all)')
    p.add_argument('--steps', default=None,
                   help='N: the first N snapshots; i,j,...: those snapshots (default all)')
    p.add_argument('--seed', type=int, default=0, help='t-SNE random state')
    p.add_argument('--dpi', type=int, default=300, help='resolution of the PNGs')
    p.add_argument('--stochastic_only', action='store_true',
                   help='draw only the stochastic-feature pictures')
    p.add_argument('--channels', type=int, default=3,
                   help='channels per layer with the largest sample variance to show')
    p.add_argument('--n_show', type=int, default=6, help='noisy samples per row in the PNGs')
    p.add_argument('--gif_duration', type=int, default=250, help='milliseconds per GIF frame')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    for flag in ('dpi', 'channels', 'n_show', 'gif_duration'):
        if getattr(args, flag) < 1:
            raise SystemExit(f'--{flag} must be at least 1, got {getattr(args, flag)}')
    savedir = args.savedir
    if not os.path.isdir(savedir):
        raise SystemExit(f'--savedir {savedir} is not a folder; run `python main.py --mode export '
                         f'--savedir DIR ...` first')
    has_export = any(os.path.isfile(os.path.join(savedir, f)) for f in (EXPORT_NPZ, EXPORT_PKL))
    has_stoch = os.path.isfile(os.path.join(savedir, STOCHASTIC_NPZ))
    if args.stochastic_only and not has_stoch:
        raise SystemExit(f'--stochastic_only: {savedir} has no {STOCHASTIC_NPZ}; run '
                         f'`python main.py --mode export --savedir DIR ...` with a Meta-Dropout '
                         f'model first')
    if not (has_export or has_stoch):
        raise SystemExit(f'{savedir} has none of {EXPORT_NPZ}, {EXPORT_PKL}, {STOCHASTIC_NPZ}; '
                         f'run `python main.py --mode export --savedir DIR ...` first')
    _matplotlib()
    outdir = os.path.join(savedir, args.out)
    try:
        ex = load_export(savedir) if has_export and not args.stochastic_only else None
        stoch = load_stochastic(savedir) if has_stoch else None
    except PlotInputError as e:
        raise SystemExit(f'plot.py: {e}')

    if ex is not None:
        n_ep, n_snap = ex['htr'].shape[:2]
        episodes = parse_selection(args.episodes, n_ep, '--episodes')
        steps = parse_selection(args.steps, n_snap, '--steps')
        kind = 'Meta-Dropout' if 'htr_sample' in ex else 'MAML'
        paths = plot_export(ex, outdir, episodes, steps, seed=args.seed, dpi=args.dpi)
        print(f'wrote {len(paths)} decision-boundary figure(s) ({kind}, from {ex["source"]}: '
              f'{len(episodes)} episode(s) x {len(steps)} snapshot(s)) in '
              f'{os.path.join(outdir, "step*")}/')
    if stoch is not None:
        images, maps = stoch
        sdir = os.path.join(outdir, 'stochastic')
        w = plot_stochastic(images, maps, sdir, channels=args.channels, n_show=args.n_show,
                            dpi=args.dpi, duration=args.gif_duration)
        print(f'wrote {len(w["png"])} stochastic-feature PNGs, {len(w["gif"])} GIFs and '
              f'summary.png ({images.shape[0]} image(s), layers {list(maps)}) in {sdir}/')
    return 0


if __name__ == '__main__':
    main()
