"""benchmarks/throughput.py: which configurations each --model runs and with what timing
defaults, the rule that mtl_* configurations run only with --model mtl (and others not with
it), and a slow end-to-end run of MTL's benchmark at a toy size (the hidden mtl_tiny
configuration: ResNet-12 at 16x16) whose printed and JSON figures must be sane."""
import json
import math

import pytest

from benchmarks import throughput

MTL_CONFIGS = ['mtl_mini5_1shot', 'mtl_mini5_5shot', 'mtl_omni5_1shot_28']
FIGURES = ('steps_per_s', 'first_step_s', 'first_eval_s', 'test_episodes_per_s', 'peak_rss_mb')


@pytest.fixture
def fake_worker(monkeypatch):
    """Replaces the worker process: records (name, args) and returns plausible figures."""
    calls = []

    def run_worker(name, args):
        calls.append((name, args))
        return dict(config=name, model=args.model, steps_per_s=1., window_rates=[1.],
                    first_step_s=1., first_eval_s=1., test_episodes_per_s=1., peak_rss_mb=1.)
    monkeypatch.setattr(throughput, 'run_worker', run_worker)
    return calls


def test_mtl_configurations(fake_worker, capsys):
    assert throughput.main(['--model', 'mtl']) == 0
    assert [n for n, _ in fake_worker] == MTL_CONFIGS
    args = fake_worker[0][1]
    assert (args.windows, args.window_steps, args.test_batches, args.warmup) == (3, 1, 2, 1)
    out = capsys.readouterr().out
    assert 'reference skipped' in out and 'none for MTL' in out
    for name in MTL_CONFIGS:
        assert f'| {name} | mtl |' in out
    for name in MTL_CONFIGS:
        c = throughput.CONFIGS[name]
        assert (c['way'], c['metabatch'], c['query'], c['n_steps'], c['n_test_steps']) == \
            (5, 2, 15, 20, 100)
        assert c['test_query'] == c['shot'] and c['arch'] == 'resnet12'
    assert throughput.CONFIGS['mtl_mini5_5shot']['shot'] == 5
    omni = throughput.CONFIGS['mtl_omni5_1shot_28']
    assert omni['image'] == (28, 28, 1) and omni['img_size'] == 28


def test_overrides_and_other_models(fake_worker, capsys):
    throughput.main(['--model', 'mtl', '--configs', 'mtl_tiny', '--windows', '2',
                     '--window_steps', '4', '--test_batches', '1', '--warmup', '0'])
    name, args = fake_worker[-1]
    assert name == 'mtl_tiny'
    assert (args.windows, args.window_steps, args.test_batches, args.warmup) == (2, 4, 1, 0)
    # The default list of the other models holds neither the MTL nor the test configurations,
    # and their timing defaults are unchanged.
    fake_worker.clear()
    throughput.main(['--model', 'maml', '--no_reference'])
    names = [n for n, _ in fake_worker]
    assert names and not any(n.startswith(('mtl', 'leo')) for n in names)
    assert (fake_worker[0][1].windows, fake_worker[0][1].window_steps,
            fake_worker[0][1].test_batches, fake_worker[0][1].warmup) == (5, 3, 5, 2)
    fake_worker.clear()
    throughput.main(['--model', 'leo', '--no_reference'])
    assert all(n.startswith('leo') for n, _ in fake_worker)
    assert 'mtl_tiny' not in throughput.CONFIGS
    with pytest.raises(SystemExit):
        throughput.main(['--model', 'mtl', '--configs', 'mtl_nope'])
    capsys.readouterr()


def test_mtl_model_and_configurations_go_together():
    with pytest.raises(SystemExit, match='run it with --model mtl'):
        throughput.worker('mtl_tiny', 'maml', 1, 1, 1)
    with pytest.raises(SystemExit, match='not an MTL configuration'):
        throughput.worker('omni5_1shot', 'mtl', 1, 1, 1)
    with pytest.raises(SystemExit, match='not a LEO configuration'):
        throughput.worker('mtl_tiny', 'leo', 1, 1, 1)


@pytest.mark.slow
def test_mtl_end_to_end(tmp_path, capsys):
    """The real worker process on mtl_tiny (about 35 s on 2 busy cores)."""
    out_json = tmp_path / 'out.json'
    assert throughput.main(['--model', 'mtl', '--configs', 'mtl_tiny', '--windows', '2',
                            '--window_steps', '1', '--test_batches', '1',
                            '--json', str(out_json)]) == 0
    out = capsys.readouterr().out
    assert 'none for MTL' in out
    line = next(l for l in out.splitlines() if l.startswith('mtl_tiny '))
    assert 'steps/s' in line and 'episodes/s' in line and 'peak RSS' in line
    assert '| mtl_tiny | mtl |' in out
    result = json.loads(out_json.read_text())['results']
    assert len(result) == 1 and result[0]['reference'] is None
    ours = result[0]['ours']
    assert ours['config'] == 'mtl_tiny' and ours['model'] == 'mtl'
    for k in FIGURES:
        assert math.isfinite(ours[k]) and ours[k] > 0, (k, ours[k])
    assert len(ours['window_rates']) == 2
    assert all(math.isfinite(r) and r > 0 for r in ours['window_rates'])
    assert ours['peak_rss_mb'] > 100   # TensorFlow alone takes more


def test_task_loop_and_batch_norm_options_reach_the_worker(fake_worker, capsys):
    throughput.main(['--configs', 'omni20_1shot', '--no_reference', '--task_loop', 'unrolled',
                     '--batch_norm', 'plain'])
    (name, args), = fake_worker
    assert (name, args.task_loop, args.batch_norm) == ('omni20_1shot', 'unrolled', 'plain')
    assert '| omni20_1shot | maml (unrolled) (plain BN) |' in capsys.readouterr().out
    fake_worker.clear()
    throughput.main(['--configs', 'omni20_1shot', '--no_reference'])
    assert (fake_worker[0][1].task_loop, fake_worker[0][1].batch_norm) == ('while', 'fused')
    assert '| omni20_1shot | maml |' in capsys.readouterr().out
    assert 'maml_tiny' not in throughput.CONFIGS


@pytest.mark.slow
def test_profile_step_end_to_end(capsys):
    """benchmarks/profile_step.py on the toy MAML configuration: the first-step split, the
    tracing table and the TF profiler's op table (real op types with positive times)."""
    from benchmarks import profile_step
    assert profile_step.main(['--config', 'maml_tiny', '--steps', '1', '--warmup', '0',
                              '--top', '5']) == 0
    out = capsys.readouterr().out
    head = next(l for l in out.splitlines() if l.startswith('maml_tiny maml task_loop=while'))
    total, trace, first = (float(x) for x in
                           __import__('re').findall(r'([\d.]+) s', head)[:3])
    assert total == pytest.approx(trace + first, abs=0.11) and trace > 0 and first > 0
    ops = out.split('top 5 op types')[1].strip().splitlines()[1:]
    assert len(ops) == 5
    ms = [float(l.split('|')[0]) for l in ops]
    assert all(m > 0 for m in ms) and ms == sorted(ms, reverse=True)
    assert any('Conv2D' in l for l in ops)
