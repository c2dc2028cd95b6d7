#!/usr/bin/env bash
# Our own: MAML on the two official Omniglot subsets (images_background_small1/2.zip, 8 alphabets,
# 242 characters x 4 rotations), meta-testing on the alphabets Korean and Tagalog and
# meta-training on the other six (alphabet-disjoint), 5-way 1-shot and 20-way 1-shot.
# Settings of ../shared/bench/README.md (metadrop Conv4, second order, 5 inner steps lr 0.1 at
# training and 10 at test, Adam 1e-3, clip 3, 15 queries). Iterations are sized for ~30 min
# each on a 2-core CPU; override with ITERS_5WAY / ITERS_20WAY.
set -e
DATA_ROOT=${DATA_ROOT:-../shared/data}
OUT=${OUT:-./results/omni_small}
COMMON="--dataset omniglot --data_root $DATA_ROOT --test_alphabets Korean,Tagalog --model maml --shot 1 --query 15 --n_steps 5 --n_test_steps 10 --inner_lr 0.1 --meta_lr 1e-3 --val_freq 200 --n_val_batches 10 --save_freq 100"
python main.py --mode meta_train --savedir $OUT/5way_1shot --way 5 --metabatch 8 --n_train_iters ${ITERS_5WAY:-1400} $COMMON "$@"
python main.py --mode meta_test --savedir $OUT/5way_1shot --way 5 --metabatch 8 --n_test_iters 1000 $COMMON "$@"
python main.py --mode meta_train --savedir $OUT/20way_1shot --way 20 --metabatch 4 --n_train_iters ${ITERS_20WAY:-850} $COMMON "$@"
python main.py --mode meta_test --savedir $OUT/20way_1shot --way 20 --metabatch 4 --n_test_iters 1000 $COMMON "$@"
