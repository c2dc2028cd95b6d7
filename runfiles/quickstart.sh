#!/usr/bin/env bash
# The main job of the quick start: MAML 5-way 1-shot on the embedded synthetic dataset
# (no download), meta-train for 200 iterations and meta-test on 600 episodes.
# Extra flags are passed to both commands, e.g. bash runfiles/quickstart.sh --model fomaml
set -e
SAVEDIR=${SAVEDIR:-./results/quickstart}
COMMON="--dataset synthetic --model maml --way 5 --shot 1 --query 15 --metabatch 4 --n_steps 5 --inner_lr 0.1 --meta_lr 1e-3 --savedir $SAVEDIR"
python main.py --mode meta_train $COMMON --n_train_iters 200 --save_freq 100 --val_freq 100 --n_val_batches 10 "$@"
python main.py --mode meta_test $COMMON --n_test_iters 600 "$@"
