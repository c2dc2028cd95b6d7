"""benchmarks/throughput.py: which rows each invocation runs (the standard table: the MAML
rows and one row of every other method with a PyTorch reference), with what timing defaults
and which reference (each method's, with the configuration's shapes in its flags), the rule
that a configuration runs only with the methods of its code path, the oneDNN summary, and
slow end-to-end runs at toy sizes (mtl_tiny, maml_tiny) whose printed and JSON figures must be
sane. benchmarks/torch_leo.py (the corrected LEO reference) against the shared one."""
import json
import math
import os
import runpy
import sys

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


@pytest.fixture
def fake_reference(monkeypatch):
    """Replaces the reference processes: records (script, argv) and prints 2 steps/s."""
    calls = []

    def run_python(argv, timeout=1800, env=None):
        calls.append((os.path.basename(argv[0]), argv[1:]))
        line = 'torch test episodes/s' if argv[0] == throughput.TORCH_EVAL else 'torch steps/s'
        return f'{line} 2.0\n', 10.
    monkeypatch.setattr(throughput, 'run_python', run_python)
    monkeypatch.setattr(throughput, 'torch_available', lambda: True)
    return calls


def flag_values(argv):
    """{flag: value} of an argument list ('--first_order' and '--float64' map to True)."""
    out, i = {}, 0
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith('--'):
            out[argv[i][2:]] = argv[i + 1]
            i += 2
        else:
            out[argv[i][2:]] = True
            i += 1
    return out


def test_mtl_configurations(fake_worker, fake_reference, capsys):
    assert throughput.main(['--model', 'mtl']) == 0
    assert [n for n, _ in fake_worker] == MTL_CONFIGS
    args = fake_worker[0][1]
    assert (args.windows, args.window_steps, args.test_batches, args.warmup) == (3, 1, 2, 1)
    out = capsys.readouterr().out
    assert 'reference skipped' not in out
    for name in MTL_CONFIGS:
        assert f'| {name} | mtl | 1.000 | 2.000 | 0.50 |' in out
    # torch_mtl.py with each configuration's shapes (its docstring's flags), no evaluation
    assert [s for s, _ in fake_reference] == ['torch_mtl.py'] * 3
    flags = [flag_values(argv) for _, argv in fake_reference]
    assert flags[0] == dict(way='5', shot='1', query='15', metabatch='2', steps='20',
                            inner_lr='0.001', xdim='84', ch='3', iters='3', warmup='1',
                            threads=str(os.cpu_count()))
    assert flags[1]['shot'] == '5' and (flags[2]['xdim'], flags[2]['ch']) == ('28', '1')
    for name in MTL_CONFIGS:
        c = throughput.CONFIGS[name]
        assert (c['way'], c['metabatch'], c['query'], c['n_steps'], c['n_test_steps']) == \
            (5, 2, 15, 20, 100)
        assert c['test_query'] == c['shot'] and c['arch'] == 'resnet12'
    assert throughput.CONFIGS['mtl_mini5_5shot']['shot'] == 5
    omni = throughput.CONFIGS['mtl_omni5_1shot_28']
    assert omni['image'] == (28, 28, 1) and omni['img_size'] == 28


def test_standard_table_runs_every_reference(fake_worker, fake_reference, capsys, tmp_path):
    """No --configs, no --model: the MAML rows and Meta-Dropout, LEO and MTL, each next to
    its own reference with the configuration's shapes; per-row timing defaults."""
    md = tmp_path / 'table.md'
    assert throughput.main(['--markdown', str(md)]) == 0
    rows = [(n, a.model) for n, a in fake_worker]
    assert rows == list(throughput.DEFAULT_ROWS)
    assert ('omni20_1shot', 'metadrop') in rows and ('mtl_omni5_1shot_28', 'mtl') in rows
    assert {'leo_mini5_1shot', 'leo_mini5_5shot', 'mtl_mini5_1shot'} <= {n for n, _ in rows}
    timing = {(n, a.model): (a.windows, a.window_steps, a.warmup) for n, a in fake_worker}
    assert timing[('mtl_mini5_1shot', 'mtl')] == (3, 1, 1)
    assert timing[('omni20_1shot', 'metadrop')] == (5, 3, 2)
    scripts = [s for s, _ in fake_reference]
    assert scripts.count('torch_maml.py') == 5 and scripts.count('torch_eval.py') == 5
    assert scripts.count('torch_metadrop.py') == 1 and scripts.count('torch_mtl.py') == 2
    assert scripts.count('torch_leo.py') == 2
    by_script = {}
    for s, argv in fake_reference:
        by_script.setdefault(s, []).append(flag_values(argv))
    drop, = by_script['torch_metadrop.py']
    assert (drop['way'], drop['nch'], drop['steps'], drop['inner_lr'], drop['iters']) == \
        ('20', '64', '5', '0.1', '5') and 'first_order' not in drop
    leo1, leo5 = by_script['torch_leo.py']
    assert (leo1['shot'], leo5['shot'], leo1['metabatch'], leo1['dim'], leo1['num_latents'],
            leo1['finetuning_steps'], leo1['iters'], leo1['warmup']) == \
        ('1', '5', '12', '640', '64', '5', '20', '3')
    assert 'float64' not in leo1
    fo = [f for f in by_script['torch_maml.py'] if 'first_order' in f]
    assert len(fo) == 2 and all(f['iters'] == '10' for f in by_script['torch_maml.py'])
    mimg = by_script['torch_maml.py'][4]
    assert (mimg['xdim'], mimg['ch'], mimg['nch'], mimg['inner_lr']) == ('84', '3', '32', '0.01')
    # LEO's reference is the corrected copy in benchmarks/, the others the shared ones
    assert throughput.reference_path('leo', throughput.argparse.Namespace(
        reference=None, reference_dir='/elsewhere')) == \
        os.path.join(throughput.REPO, 'benchmarks', 'torch_leo.py')
    out = capsys.readouterr().out
    assert '| omni20_1shot | metadrop | 1.000 | 2.000 | 0.50 | 1.0 | 1.00 | - | - |' in out
    assert '| omni20_1shot | maml | 1.000 | 2.000 | 0.50 | 1.0 | 1.00 | 2.00 | 0.50 |' in out
    text = md.read_text()
    assert text.startswith('Machine: ') and 'TF_ENABLE_ONEDNN_OPTS=' in text
    assert 'PyTorch' in text and text.count('\n|') == 2 + len(rows)


def test_rows_name_their_model(fake_worker, fake_reference, capsys):
    throughput.main(['--configs', 'omni5_1shot,omni5_1shot:metadrop,taml_omni5_imb,'
                     'omni5_1shot_fo', '--ref_iters', '2'])
    assert [(n, a.model) for n, a in fake_worker] == [
        ('omni5_1shot', 'maml'), ('omni5_1shot', 'metadrop'), ('taml_omni5_imb', 'taml'),
        ('omni5_1shot_fo', 'fomaml')]
    out = capsys.readouterr().out
    assert 'reference skipped for taml: there is none for TAML' in out
    assert [s for s, _ in fake_reference] == ['torch_maml.py', 'torch_eval.py',
                                             'torch_metadrop.py', 'torch_maml.py',
                                             'torch_eval.py']
    assert all(flag_values(a)['iters'] == '2' for s, a in fake_reference if s != 'torch_eval.py')
    for bad in (['--configs', 'omni5_1shot_fo:metadrop'], ['--configs', 'leo_mini5_1shot:maml'],
                ['--configs', 'omni5_1shot:nope'], ['--configs', ','], ['--windows', '0']):
        with pytest.raises(SystemExit):
            throughput.main(bad)
    assert 'error:' in capsys.readouterr().err


def test_onednn_summary():
    text = '\n'.join([
        'onednn_verbose,v1,info,oneDNN v3.7.3 (commit N/A)',
        'onednn_verbose,v1,info,cpu,isa:Intel AVX2',
        'onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation',
        'onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx2,forward_training,'
        'src:f32::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,mb4_ic8oc8,0.5',
        'onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx2,forward_training,'
        'src:f32::blocked:acdb::f0,,alg:convolution_direct,mb4_ic8oc8,1.5',
        'onednn_verbose,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:cdba::f0,,,8x8x3x3,0.25',
        'something else'])
    s = throughput.onednn_summary(text, steps=2)
    assert s['info'] == ['oneDNN v3.7.3 (commit N/A)', 'cpu,isa:Intel AVX2']
    assert s['rows'] == [('convolution', 'brg_conv_fwd:avx2', 'forward_training', 1., 1.),
                         ('reorder', 'jit:uni', 'undef', 0.5, 0.125)]
    md = throughput.kernels_markdown('ours', s, top=1)
    assert '| convolution | brg_conv_fwd:avx2 | forward_training | 1 | 1.0 | 89% |' in md
    assert '| (1 more) | | | 0.5 | 0.1 | 11% |' in md


def test_corrected_leo_reference_computes_the_same(monkeypatch, capsys):
    """benchmarks/torch_leo.py drops only work whose result is unused: from the same seed, its
    weights after two steps are the shared script's, bit for bit."""
    pytest.importorskip('torch')
    shared = os.path.join(throughput.SHARED_BENCH, 'torch_leo.py')
    if not os.path.exists(shared):
        pytest.skip(f'{shared} not found')
    argv = ['--way', '3', '--shot', '2', '--query', '2', '--metabatch', '2', '--dim', '16',
            '--num_latents', '4', '--steps', '2', '--finetuning_steps', '2', '--iters', '1',
            '--warmup', '1', '--threads', '1']
    weights = []
    for path in (shared, os.path.join(throughput.REPO, 'benchmarks', 'torch_leo.py')):
        monkeypatch.setattr(sys, 'argv', [path, *argv])
        g = runpy.run_path(path, run_name='__main__')
        weights.append([p.detach().clone() for p in g['params']])
    assert 'torch steps/s' in capsys.readouterr().out
    for a, b in zip(*weights):
        assert a.shape == b.shape and bool((a == b).all())
    assert any(bool((a != 0).any()) for a in weights[0])


def test_overrides_and_other_models(fake_worker, capsys):
    throughput.main(['--model', 'mtl', '--configs', 'mtl_tiny', '--windows', '2',
                     '--window_steps', '4', '--test_batches', '1', '--warmup', '0',
                     '--no_reference'])
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
    with pytest.raises(SystemExit, match='first-order MAML configuration'):
        throughput.worker('omni5_1shot_fo', 'metadrop', 1, 1, 1)
    with pytest.raises(SystemExit, match='not an MTL configuration'):
        throughput.worker('omni5_1shot', 'mtl', 1, 1, 1)
    with pytest.raises(SystemExit, match='not a LEO configuration'):
        throughput.worker('mtl_tiny', 'leo', 1, 1, 1)


@pytest.mark.slow
def test_mtl_end_to_end(tmp_path, capsys):
    """The real worker process on mtl_tiny and, if PyTorch is installed, torch_mtl.py at its
    shapes (about 50 s on 2 busy cores)."""
    have_torch = throughput.torch_available()
    out_json = tmp_path / 'out.json'
    assert throughput.main(['--model', 'mtl', '--configs', 'mtl_tiny', '--windows', '2',
                            '--window_steps', '1', '--test_batches', '1', '--ref_iters', '1',
                            '--ref_warmup', '0', '--threads', '1',
                            '--json', str(out_json)]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith('mtl_tiny '))
    assert 'steps/s' in line and 'episodes/s' in line and 'peak RSS' in line
    assert '| mtl_tiny | mtl |' in out
    result = json.loads(out_json.read_text())['results']
    assert len(result) == 1
    ours, ref = result[0]['ours'], result[0]['reference']
    assert ours['config'] == 'mtl_tiny' and ours['model'] == 'mtl'
    for k in FIGURES:
        assert math.isfinite(ours[k]) and ours[k] > 0, (k, ours[k])
    assert len(ours['window_rates']) == 2
    assert all(math.isfinite(r) and r > 0 for r in ours['window_rates'])
    assert ours['peak_rss_mb'] > 100   # TensorFlow alone takes more
    assert ours['onednn_opts'] in ('0', '1') and ours['tensorflow']
    if have_torch:
        assert ref['script'] == 'torch_mtl.py' and ref['steps_per_s'] > 0
        assert ref['test_episodes_per_s'] is None and ref['peak_rss_mb'] > 50
        assert 'torch_mtl.py train' in line
    else:
        assert ref is None and 'PyTorch is not installed' in out


@pytest.mark.slow
def test_kernels_end_to_end(tmp_path, capsys):
    """--kernels on maml_tiny: the oneDNN primitives of a real step (convolutions forward
    and backward) of ours and of torch_maml.py."""
    md = tmp_path / 'k.md'
    assert throughput.main(['--kernels', '--configs', 'maml_tiny', '--threads', '1',
                            '--markdown', str(md)]) == 0
    text = md.read_text()
    ours = text.split('reference torch_maml.py')[0]
    assert 'oneDNN v' in ours and '| convolution |' in ours
    assert 'backward_weights' in ours and 'forward_training' in ours
    if throughput.torch_available() and os.path.exists(throughput.DEFAULT_REFERENCE):
        ref = text.split('reference torch_maml.py')[1]
        assert 'per step over 4 steps' in ref and '| convolution |' in ref
    capsys.readouterr()


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


def test_a_failed_row_is_reported_and_the_others_run(fake_reference, monkeypatch, capsys):
    def run_worker(name, args):
        if name == 'omni5_1shot':
            raise RuntimeError('worker omni5_1shot failed: ...\nMemoryError: out of memory\n')
        return dict(config=name, model=args.model, steps_per_s=1., window_rates=[1.],
                    first_step_s=1., first_eval_s=1., test_episodes_per_s=1., peak_rss_mb=1.)
    monkeypatch.setattr(throughput, 'run_worker', run_worker)
    run_python = throughput.run_python

    def failing_metadrop(argv, timeout=1800, env=None):
        if argv[0].endswith('torch_metadrop.py'):
            raise RuntimeError('torch_metadrop.py failed: boom')
        return run_python(argv, timeout, env)
    monkeypatch.setattr(throughput, 'run_python', failing_metadrop)
    assert throughput.main(['--configs', 'omni5_1shot,omni20_1shot:metadrop,omni20_1shot']) == 1
    out, err = capsys.readouterr()
    assert '| omni5_1shot | maml | failed: MemoryError: out of memory |' in out
    assert '| omni20_1shot | metadrop | 1.000 | - | - |' in out
    assert 'torch_metadrop.py FAILED: torch_metadrop.py failed: boom' in out
    assert '| omni20_1shot | maml | 1.000 | 2.000 | 0.50 |' in out
    assert 'error: 2 row(s) failed' in err


def test_profile_step_takes_every_configuration_with_its_method(capsys):
    from benchmarks import profile_step
    for argv in (['--config', 'mtl_tiny', '--model', 'maml'],
                 ['--config', 'leo_mini5_1shot', '--model', 'metadrop'],
                 ['--config', 'omni5_1shot_fo', '--model', 'metadrop']):
        with pytest.raises(SystemExit):
            profile_step.main(argv)
        assert 'error:' in capsys.readouterr().err


def test_several_thread_counts_keep_the_faster_reference(fake_worker, monkeypatch, capsys):
    runs = []

    def run_python(argv, timeout=1800, env=None):
        threads = flag_values(argv[1:])['threads']
        runs.append((os.path.basename(argv[0]), threads))
        if argv[0] == throughput.TORCH_EVAL:
            return f'torch test episodes/s {1.0 if threads == "1" else 4.0}\n', 10.
        return f'torch steps/s {3.0 if threads == "1" else 2.0}\n', 10.
    monkeypatch.setattr(throughput, 'run_python', run_python)
    monkeypatch.setattr(throughput, 'torch_available', lambda: True)
    assert throughput.main(['--configs', 'omni5_1shot', '--threads', '2,1']) == 0
    assert runs == [('torch_maml.py', '1'), ('torch_eval.py', '1'), ('torch_maml.py', '2'),
                    ('torch_eval.py', '2')]
    out = capsys.readouterr().out
    assert '| omni5_1shot | maml | 1.000 | 3.000 (1 thread) | 0.33 |' in out
    assert '| 4.00 (2 threads) | 0.25 |' in out
    assert 'PyTorch' in out and 'with 1 or 2 threads (each reference at its faster count)' in out
    for bad in ('0', 'two', ''):
        with pytest.raises(SystemExit):
            throughput.main(['--configs', 'omni5_1shot', '--threads', bad])
    assert 'error:' in capsys.readouterr().err
