"""benchmarks/scaling.py: one factor at a time around the base configuration (every other
setting the base's), the base measured once and shown in every factor, --efficient only with
the inner steps, the tables' relative cost, failures reported and the exit code, bad
--factors; and a slow end-to-end run at toy size (two real worker processes)."""
import json
import math

import pytest

from benchmarks import scaling, throughput


@pytest.fixture
def fake_worker(monkeypatch):
    """Replaces the worker process: a step costs 0.1 s times (way * shot * metabatch * n_steps
    * pixels) relative to the base; meta-test 0.01 s an episode."""
    calls = []
    base = scaling.config(scaling.BASE)

    def work(c):
        return math.prod(c[k] / base[k] for k in ('way', 'shot', 'metabatch', 'n_steps')) * \
            (c['image'][0] / base['image'][0]) ** 2

    def run_worker(c, efficient, episodes, timing, timeout):
        calls.append((c, efficient, episodes, timing))
        if c['metabatch'] == 16:
            return dict(error='exit code -9: Killed')
        if episodes:
            return dict(test_s=0.01 * episodes, first_call_s=1., episodes=episodes,
                        test_episodes_per_s=100., peak_rss_mb=500.)
        return dict(steps_per_s=1. / (0.1 * work(c) * (1.25 if efficient else 1.)),
                    window_rates=[1.], first_step_s=5., peak_rss_mb=700.)
    monkeypatch.setattr(scaling, 'run_worker', run_worker)
    return calls


def test_one_factor_at_a_time(fake_worker, capsys, tmp_path):
    md = tmp_path / 'scaling.md'
    assert scaling.main(['--markdown', str(md), '--json', str(tmp_path / 's.json')]) == 1
    base = scaling.config(scaling.BASE)
    assert base['way'] == 5 and base['image'] == (28, 28, 1) and base['metabatch'] == 4
    for c, efficient, episodes, timing in fake_worker:
        differ = [k for k in base if c[k] != base[k]]
        assert len(differ) <= 1, differ
        assert not efficient or (not differ or differ == ['n_steps'])
        assert timing == scaling.TIMING
    # every value of every factor once, the base point once, efficient at each n_steps
    n_train = sum(len(v) for v in scaling.FACTORS.values()) - (len(scaling.FACTORS) - 1)
    n_train += len(scaling.FACTORS['n_steps'])
    tests = [e for _, _, e, _ in fake_worker if e]
    assert tests == list(scaling.TEST_EPISODES) == [600, 6000]
    assert len(fake_worker) == n_train + len(tests)
    text = md.read_text()
    assert 'one factor at a time around omni5_1shot' in text.lower()
    assert text.count('(base)') == len(scaling.FACTORS)
    assert '| way | 20 | no | 2.500 | 0.40 | 4.00 | 5.0 | 700 |' in text
    assert '| image | 84 | no | 1.111 | 0.90 | 9.00 |' in text
    assert '| n_steps | 20 | yes | 2.000 | 0.50 | 5.00 |' in text
    assert '| metabatch | 16 | no | failed: exit code -9: Killed |' in text
    assert '| 6000 | 60.0 | 1.0 | 100.00 | 500 |' in text
    assert 'TF_ENABLE_ONEDNN_OPTS=' in text
    saved = json.loads((tmp_path / 's.json').read_text())
    assert saved['base'] == 'omni5_1shot' and len(saved['results']) == n_train + \
        len(scaling.FACTORS) - 1 + len(tests)   # the base repeated in every factor's rows
    assert 'FAILED exit code -9' in capsys.readouterr().out


def test_factor_subset_quick_and_bad_input(fake_worker, capsys):
    assert scaling.main(['--quick', '--factors', 'way', '--windows', '2']) == 0
    assert [c['way'] for c, *_ in fake_worker] == list(scaling.QUICK_FACTORS['way'])
    assert all(c['n_channel'] == throughput.ALL_CONFIGS['maml_tiny']['n_channel']
               for c, *_ in fake_worker)
    assert fake_worker[0][3] == dict(scaling.QUICK_TIMING, windows=2)
    capsys.readouterr()
    for bad in (['--factors', 'colour'], ['--factors', ','], ['--windows', '0']):
        with pytest.raises(SystemExit):
            scaling.main(bad)
    assert 'error:' in capsys.readouterr().err


@pytest.mark.slow
def test_end_to_end_quick(monkeypatch, tmp_path, capsys):
    """Two real worker processes at toy size: a meta-train row and a meta-test row."""
    monkeypatch.setattr(scaling, 'QUICK_FACTORS', {'metabatch': (1,)})
    monkeypatch.setattr(scaling, 'QUICK_TEST_EPISODES', (3,))
    out_json = tmp_path / 'out.json'
    assert scaling.main(['--quick', '--factors', 'metabatch,test', '--json',
                         str(out_json)]) == 0
    train, test = json.loads(out_json.read_text())['results']
    assert train['factor'] == 'metabatch' and train['steps_per_s'] > 0
    assert train['first_step_s'] > 0 and train['peak_rss_mb'] > 100
    # 3 episodes in batches of maml_tiny's metabatch (2): 2 calls, 4 episodes
    assert test['episodes'] == 4 and 0 < test['first_call_s'] <= test['test_s']
    out = capsys.readouterr().out
    assert '| metabatch | 1 | no |' in out and '| 3 |' in out
