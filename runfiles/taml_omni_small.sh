#!/usr/bin/env bash
# Our own: MAML, Meta-SGD and Bayesian TAML (l2b's code path, --model taml with its switches)
# on the two official Omniglot subsets (images_background_small1/2.zip, 8 alphabets, 242
# characters x 4 rotations), imbalanced 5-way tasks: 1..15 shots per class or per task (l2b's
# mixed mode), 5 queries per class (20 drawings per character leave 15 for the support set).
# Alphabet-disjoint: meta-test on Korean and Tagalog, validate on Latin (model selection, as
# l2b), meta-train on the other five. l2b's CIFAR settings otherwise: metabatch 4, Adam 1e-3,
# clip 3, 5 inner steps at training and 10 at test, inner_lr 0.5 for MAML, alpha 0.01 for
# Meta-SGD and TAML, 10 sampled passes at TAML's meta-test. Equal budgets: ITERS iterations each
# (800 by default, ~1 h for the three on 2 CPU cores); override with ITERS.
set -e
DATA_ROOT=${DATA_ROOT:-../shared/data}
OUT=${OUT:-./results/taml_omni_small}
ITERS=${ITERS:-800}
COMMON="--model taml --dataset omniglot --data_root $DATA_ROOT --test_alphabets Korean,Tagalog --val_alphabets Latin --way 5 --max_shot 15 --query 5 --metabatch 4 --meta_lr 1e-3 --print_freq 50 --val_freq 200 --n_val_batches 25 --save_freq 200 --balance_freq 200 --max_to_keep 10"
TRAIN="--mode meta_train --n_steps 5 --n_train_iters $ITERS"
TEST="--mode meta_test --n_steps 10 --n_test_episodes 600"
python main.py $TRAIN --savedir $OUT/maml --inner_lr 0.5 $COMMON "$@"
python main.py $TEST --savedir $OUT/maml --inner_lr 0.5 $COMMON "$@"
python main.py $TRAIN --savedir $OUT/msgd --alpha_on $COMMON "$@"
python main.py $TEST --savedir $OUT/msgd --alpha_on $COMMON "$@"
python main.py $TRAIN --savedir $OUT/taml --alpha_on --omega_on --gamma_on --z_on $COMMON "$@"
python main.py $TEST --savedir $OUT/taml --alpha_on --omega_on --gamma_on --z_on --n_mc_samples 10 $COMMON "$@"
python main.py $TEST --savedir $OUT/taml --alpha_on --omega_on --gamma_on --z_on --n_mc_samples 0 $COMMON "$@"
