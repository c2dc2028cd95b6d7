#!/usr/bin/env bash
# Our own: transductive vs inductive batch norm (PyTorch-MAML's finding) on the two official
# Omniglot subsets, 5-way 1-shot, alphabet-disjoint (meta-test on Korean and Tagalog).
# Two MAML checkpoints, one trained with the originals' transductive batch norm and one with
# per-episode running statistics (--bn_mode episodic); each is meta-tested on the same 1000
# episodes under all three --bn_mode values (meta_test.json, meta_test_episodic.json,
# meta_test_support.json in each savedir). Settings as maml_omni_small.sh.
set -e
DATA_ROOT=${DATA_ROOT:-../shared/data}
OUT=${OUT:-./results/bn_modes_omni_small}
ITERS=${ITERS:-600}
COMMON="--dataset omniglot --data_root $DATA_ROOT --test_alphabets Korean,Tagalog --model maml --way 5 --shot 1 --query 15 --metabatch 8 --n_steps 5 --n_test_steps 10 --inner_lr 0.1 --meta_lr 1e-3 --val_freq 200 --n_val_batches 10 --save_freq 100"
# checkpoint 1: trained with the originals' transductive batch norm
python main.py --mode meta_train --savedir $OUT/train_transductive --bn_mode transductive --n_train_iters $ITERS $COMMON "$@"
python main.py --mode meta_test --savedir $OUT/train_transductive --bn_mode transductive --n_test_iters 1000 $COMMON "$@"
python main.py --mode meta_test --savedir $OUT/train_transductive --bn_mode support --n_test_iters 1000 $COMMON "$@"
python main.py --mode meta_test --savedir $OUT/train_transductive --bn_mode episodic --n_test_iters 1000 $COMMON "$@"
# checkpoint 2: trained with per-episode running statistics (PyTorch-MAML's inductive setting)
python main.py --mode meta_train --savedir $OUT/train_episodic --bn_mode episodic --n_train_iters $ITERS $COMMON "$@"
python main.py --mode meta_test --savedir $OUT/train_episodic --bn_mode episodic --n_test_iters 1000 $COMMON "$@"
python main.py --mode meta_test --savedir $OUT/train_episodic --bn_mode support --n_test_iters 1000 $COMMON "$@"
python main.py --mode meta_test --savedir $OUT/train_episodic --bn_mode transductive --n_test_iters 1000 $COMMON "$@"
