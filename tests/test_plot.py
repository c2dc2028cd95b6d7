"""plot.py: decision-boundary figures and stochastic-feature pictures from synthetic exports."""
import os
import pickle

import numpy as np
import pytest

pytest.importorskip('matplotlib')
pytest.importorskip('sklearn')
from PIL import Image  # noqa: E402

import plot  # noqa: E402

DPI = ['--dpi', '20']


def make_export(seed=0, n_ep=2, n_steps=2, feat=8, shot=1, query=3, n_samp=4):
    """Arrays in the export.npz layout; n_samp=None gives a MAML export (no htr_sample)."""
    rng = np.random.default_rng(seed)
    snaps = n_steps + 1
    ytr = np.tile(np.repeat([0, 1], shot), (n_ep, 1))
    yte = np.tile(np.repeat([0, 1], query), (n_ep, 1))
    centres = 2 * rng.normal(size=(2, feat))
    ex = {
        'htr': centres[ytr][:, None] + rng.normal(size=(n_ep, snaps, 2 * shot, feat)),
        'hte': centres[yte][:, None] + rng.normal(size=(n_ep, snaps, 2 * query, feat)),
        'w': rng.normal(size=(n_ep, snaps, feat, 2)),
        'b': rng.normal(size=(n_ep, snaps, 2)),
        'ytr': ytr,
        'yte': yte,
        'classes': np.array([[c, c + 5] for c in range(n_ep)]),
    }
    if n_samp is not None:
        ex['htr_sample'] = ex['htr'][:, :, None] + 0.3 * rng.normal(
            size=(n_ep, snaps, n_samp, 2 * shot, feat))
    return ex


def write_npz(savedir, ex):
    np.savez(os.path.join(savedir, 'export.npz'), **ex)


def make_stochastic(seed=0, n_img=2, n_samp=5, size=12, channels=1):
    """stochastic.npz arrays: layer l has 4 channels, the noise of channel c scaled by sd[c]."""
    rng = np.random.default_rng(seed)
    out = {'images': rng.uniform(size=(n_img, size, size, channels)),
           'layers': np.array([1, 2])}
    sd = np.array([0.1, 2.0, 0.0, 1.0])  # channel variance order: 1, 3, 0, 2
    for l, hw in ((1, 6), (2, 3)):
        mean = rng.normal(size=(n_img, hw, hw, 4))
        out[f'layer{l}_mean'] = mean
        out[f'layer{l}'] = mean[:, None] + sd * rng.normal(size=(n_img, n_samp, hw, hw, 4))
    return out


def assert_pngs(paths):
    for p in paths:
        assert os.path.isfile(p), p
        with Image.open(p) as im:
            assert im.format == 'PNG'
            assert im.size[0] > 0 and im.size[1] > 0


def step_pngs(savedir, out='plot'):
    root = os.path.join(savedir, out)
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files
                  if os.path.basename(d).startswith('step'))


# --------------------------------------------------------------------------- coordinates

def test_boundary_coordinates_hand_built():
    w = np.zeros((3, 2))
    w[0, 0] = 2.0  # logit0 = 2 h0, logit1 = 0, plus bias
    b = np.array([0.0, 1.0])
    h = np.array([[0.5, 7.0, -1.0],   # logit0 = 1 = logit1: on the boundary
                  [0.5, -3.0, 4.0],   # also on it
                  [3.0, 0.0, 0.0],    # logit0 = 6 > 1: class 0
                  [-1.0, 2.0, 0.0]])  # logit0 = -2 < 1: class 1
    x, residual, xb = plot.boundary_coordinates(h, w, b)
    assert xb == pytest.approx(0.5)
    np.testing.assert_allclose(x, [0.5, 0.5, 3.0, -1.0])
    assert x[2] > xb > x[3]
    np.testing.assert_allclose(residual[:, 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(residual[:, 1:], h[:, 1:])


def test_boundary_coordinates_match_the_classifier():
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(6, 2)), rng.normal(size=2)
    h = 3 * rng.normal(size=(200, 6))
    x, residual, xb = plot.boundary_coordinates(h, w, b)
    margin = (h @ w + b) @ np.array([1.0, -1.0])  # logit0 - logit1
    assert np.all(np.sign(x - xb) == np.sign(margin))  # class 0 to the right
    # Moving any point along the normal onto the boundary lands on x = xb.
    u = (w[:, 0] - w[:, 1]) / np.linalg.norm(w[:, 0] - w[:, 1])
    on = h - np.outer(margin / np.linalg.norm(w[:, 0] - w[:, 1]), u)
    np.testing.assert_allclose((on @ w + b) @ [1.0, -1.0], 0.0, atol=1e-9)
    np.testing.assert_allclose(plot.boundary_coordinates(on, w, b)[0], xb)
    np.testing.assert_allclose(residual @ u, 0.0, atol=1e-9)
    np.testing.assert_allclose(residual + np.outer(x, u), h)


def test_degenerate_head_has_no_boundary():
    x, _, xb = plot.boundary_coordinates(np.ones((4, 3)), np.ones((3, 2)), np.zeros(2))
    assert np.isnan(xb) and np.all(x == 0)


def test_tsne_is_seeded_and_handles_few_points():
    pts = np.random.default_rng(2).normal(size=(7, 5))
    np.testing.assert_array_equal(plot.tsne_1d(pts, seed=3), plot.tsne_1d(pts, seed=3))
    assert plot.tsne_1d(pts[:2]).shape == (2,)  # too few points for t-SNE: zeros
    assert plot.tsne_1d(pts[:3]).shape == (3,)  # perplexity clamped to 2


def test_shot_indices_and_markers_beyond_two_shots():
    idx = plot.shot_indices([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    assert idx.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert len({plot.SHOT_MARKERS[k] for k in range(5)}) == 5
    assert plot.SHOT_MARKERS[:2] == ('o', '^')  # the original's two


# --------------------------------------------------------------------------- figures

def test_metadrop_export_draws_every_step_and_episode(tmp_path, capsys):
    write_npz(tmp_path, make_export())
    plot.main(['--savedir', str(tmp_path)] + DPI)
    expected = [os.path.join(f'step{s}', f'{i}.png') for s in range(3) for i in range(2)]
    assert step_pngs(tmp_path) == sorted(expected)
    assert_pngs(os.path.join(tmp_path, 'plot', p) for p in expected)
    out = capsys.readouterr().out
    assert 'wrote 6 decision-boundary figure(s) (Meta-Dropout' in out


def test_five_shot_does_not_crash(tmp_path):
    # The original indexed a two-entry marker list by the shot index.
    write_npz(tmp_path, make_export(shot=5))
    plot.main(['--savedir', str(tmp_path), '--steps', '1', '--out', 'five'] + DPI)
    assert step_pngs(tmp_path, 'five') == [os.path.join('step0', '0.png'),
                                           os.path.join('step0', '1.png')]
    assert_pngs([tmp_path / 'five' / 'step0' / '1.png'])


def test_maml_export_and_selection(tmp_path, capsys):
    ex = make_export(n_samp=None, shot=2)
    write_npz(tmp_path, ex)
    plot.main(['--savedir', str(tmp_path), '--episodes', '1,', '--steps', '0,2'] + DPI)
    assert step_pngs(tmp_path) == [os.path.join('step0', '1.png'),
                                   os.path.join('step2', '1.png')]
    assert_pngs([tmp_path / 'plot' / 'step2' / '1.png'])
    assert '(MAML' in capsys.readouterr().out


def test_pickle_fallback_warns(tmp_path, capsys):
    ex = make_export(shot=3)
    episodes = [{k: ex[k][i] for k in ex if k != 'classes'} for i in range(2)]
    with open(tmp_path / 'export.pkl', 'wb') as f:
        pickle.dump(episodes, f)
    loaded = plot.load_export(str(tmp_path))
    assert 'trust' in capsys.readouterr().err
    for k in ('htr', 'hte', 'w', 'b', 'htr_sample', 'ytr', 'yte'):
        np.testing.assert_allclose(loaded[k], ex[k])
    plot.main(['--savedir', str(tmp_path), '--episodes', '1', '--steps', '1'] + DPI)
    assert step_pngs(tmp_path) == [os.path.join('step0', '0.png')]


def test_npz_is_preferred_and_never_unpickled(tmp_path, capsys):
    write_npz(tmp_path, make_export())
    (tmp_path / 'export.pkl').write_bytes(b'not a pickle')
    ex = plot.load_export(str(tmp_path))
    assert ex['source'].endswith('export.npz')
    assert 'trust' not in capsys.readouterr().err


# --------------------------------------------------------------------------- bad input

def test_missing_inputs_exit_with_the_command_to_run(tmp_path):
    with pytest.raises(SystemExit) as e:
        plot.main(['--savedir', str(tmp_path)])
    assert 'python main.py --mode export --savedir' in str(e.value)
    with pytest.raises(SystemExit) as e:
        plot.main(['--savedir', str(tmp_path / 'absent')])
    assert 'python main.py --mode export' in str(e.value)


def test_inconsistent_shapes_are_named(tmp_path):
    ex = make_export()
    ex['w'] = ex['w'][:, :, :5]  # F = 5 instead of 8
    write_npz(tmp_path, ex)
    with pytest.raises(SystemExit) as e:
        plot.main(['--savedir', str(tmp_path)] + DPI)
    msg = str(e.value)
    assert 'htr' in msg and 'w [2, 3, 5, 2]' in msg and 'F' in msg

    ex = make_export()
    ex['yte'] = ex['yte'][:, :4]
    write_npz(tmp_path, ex)
    with pytest.raises(plot.PlotInputError, match=r'hte .* yte .*2\*query'):
        plot.load_export(str(tmp_path))

    ex = make_export()
    del ex['b']
    write_npz(tmp_path, ex)
    with pytest.raises(plot.PlotInputError, match='lacks the array.* b'):
        plot.load_export(str(tmp_path))


def test_bad_selection_and_missing_dependency(tmp_path, monkeypatch):
    assert plot.parse_selection('3', 10, '--episodes') == [0, 1, 2]
    assert plot.parse_selection('50', 10, '--episodes') == list(range(10))
    assert plot.parse_selection('4,1', 10, '--episodes') == [4, 1]
    for bad in ('12,', 'x', '0'):
        with pytest.raises(SystemExit, match='--episodes'):
            plot.parse_selection(bad, 10, '--episodes')
    write_npz(tmp_path, make_export())
    monkeypatch.setitem(__import__('sys').modules, 'sklearn.manifold', None)
    with pytest.raises(SystemExit, match=r'pip install -e "\.\[plot\]"'):
        plot.main(['--savedir', str(tmp_path)])


# --------------------------------------------------------------------------- stochastic

def test_select_channels_picks_the_most_variable():
    samples = make_stochastic(n_samp=40)['layer1'][0]
    assert plot.select_channels(samples, 2) == [1, 3]
    assert plot.select_channels(samples, 3) == [1, 3, 0]
    assert plot.select_channels(samples, 99) == [1, 3, 0, 2]


def test_stochastic_pictures(tmp_path, capsys):
    np.savez(tmp_path / 'stochastic.npz', **make_stochastic(n_samp=5, channels=3))
    plot.main(['--savedir', str(tmp_path), '--stochastic_only', '--channels', '2',
               '--n_show', '3'] + DPI)
    sdir = tmp_path / 'plot' / 'stochastic'
    pngs = [sdir / f'img{k}_layer{l}.png' for k in range(2) for l in (1, 2)]
    assert_pngs(pngs + [sdir / 'summary.png'])
    gifs = sorted(p.name for p in sdir.glob('*.gif'))
    assert gifs == sorted(f'img{k}_layer{l}_ch{c}.gif' for k in range(2) for l in (1, 2)
                          for c in (1, 3))
    with Image.open(sdir / 'img1_layer2_ch3.gif') as im:
        assert im.n_frames == 5
        assert im.size[0] > im.size[1] > 0  # input and map side by side
    assert step_pngs(tmp_path) == []
    assert 'wrote 4 stochastic-feature PNGs, 8 GIFs' in capsys.readouterr().out


def test_stochastic_alongside_export_and_bad_layers(tmp_path):
    write_npz(tmp_path, make_export(n_samp=None))
    st = make_stochastic(channels=1)
    np.savez(tmp_path / 'stochastic.npz', **st)
    plot.main(['--savedir', str(tmp_path), '--episodes', '1', '--steps', '1',
               '--channels', '1', '--n_show', '2'] + DPI)
    assert step_pngs(tmp_path) == [os.path.join('step0', '0.png')]
    assert (tmp_path / 'plot' / 'stochastic' / 'img0_layer1_ch1.gif').is_file()

    st['layer2_mean'] = st['layer2_mean'][:, :2]
    np.savez(tmp_path / 'stochastic.npz', **st)
    with pytest.raises(SystemExit, match=r'layer2 .* layer2_mean .*H2'):
        plot.main(['--savedir', str(tmp_path), '--stochastic_only'])
    del st['layer2']
    np.savez(tmp_path / 'stochastic.npz', **st)
    with pytest.raises(SystemExit, match='lacks the array layer2'):
        plot.main(['--savedir', str(tmp_path), '--stochastic_only'])
    os.remove(tmp_path / 'stochastic.npz')
    with pytest.raises(SystemExit, match='no stochastic.npz'):
        plot.main(['--savedir', str(tmp_path), '--stochastic_only'])
