"""Writes the checkpoints tests/test_old_checkpoints.py restores: one tiny meta_train per
method, saved by the code of the commit named in COMMIT (before methods became plugins), and
the meta_test accuracy that code measured on them. Run from the repository root, at that
commit only: `python tests/data/old_checkpoints/make.py`."""
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))

from benchmarks import leo_gaussian  # noqa: E402

TINY = ['--dataset', 'synthetic', '--way', '3', '--shot', '1', '--query', '2', '--metabatch',
        '2', '--n_steps', '1', '--n_channel', '4', '--noprogress', '--n_val_batches', '1',
        '--n_test_iters', '6', '--n_train_iters', '2', '--save_freq', '2', '--val_freq', '2',
        '--print_freq', '1']
RUNS = {
    'maml': TINY,
    'metasgd': ['--model', 'metasgd', *TINY],
    'metadrop': ['--model', 'metadrop', *TINY],
    'taml': ['--model', 'taml', '--alpha_on', '--omega_on', '--gamma_on', '--z_on',
             '--max_shot', '3', '--dataset',
             'synthetic', '--way', '3', '--query', '2', '--metabatch', '2', '--n_steps', '1',
             '--n_channel', '4', '--noprogress', '--n_val_batches', '1', '--n_test_iters', '6',
             '--n_train_iters', '2', '--save_freq', '2', '--val_freq', '2', '--print_freq',
             '1'],
    'leo': ['--model', 'leo', '--dataset', 'leo_custom', '--data_path', '{embeddings}',
            '--noprogress', '--num_latents', '4', '--total_examples_per_class', '12',
            '--query', '3', '--metabatch', '2', '--n_steps', '2',
            '--finetuning_unroll_length', '2', '--metavalid_batch_size', '4',
            '--n_val_batches', '1', '--metatest_batch_size', '5', '--n_test_iters', '10',
            '--eval_chunk', '5', '--nouse_64bits_dtype', '--n_train_iters', '2',
            '--checkpoint_steps', '2'],
}


def embeddings(folder):
    """LEO's pickles of 8 / 5 / 6 Gaussian classes x 12 examples in 16 dimensions (seeded)."""
    data, _ = leo_gaussian.generate(seed=0, dim=16, subspace=4, tau=2.0, sigma=1.0, per_class=12,
                                    splits=dict(train=8, val=5, test=6))
    leo_gaussian.write_leo_pickles(folder, data)


def main():
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                            check=True).stdout.strip()
    emb = os.path.join('/tmp', 'old_ckpt_embeddings')
    os.makedirs(emb, exist_ok=True)
    embeddings(emb)
    for name, argv in RUNS.items():
        out = os.path.join(HERE, name)
        shutil.rmtree(out, ignore_errors=True)
        argv = [a.replace('{embeddings}', emb) for a in argv]
        for mode in ('meta_train', 'meta_test'):
            subprocess.run([sys.executable, 'main.py', '--mode', mode, '--savedir', out, *argv],
                           check=True)
        with open(os.path.join(out, 'argv.json'), 'w') as f:
            json.dump(dict(commit=commit, argv=[a.replace(emb, '{embeddings}') for a in argv]),
                      f, indent=1)
        for junk in ('events',):   # TensorBoard summaries: not needed to restore
            shutil.rmtree(os.path.join(out, junk), ignore_errors=True)


if __name__ == '__main__':
    main()
