#!/usr/bin/env bash
# Our own: MAML vs Meta-Dropout on the two official Omniglot subsets (images_background_small1/2,
# 8 alphabets), meta-testing on the alphabets Korean and Tagalog and meta-training on the other
# six (alphabet-disjoint), 20-way 1-shot and 20-way 5-shot, with equal budgets (iterations)
# for both methods. Everything else as the metadrop runfiles (Conv4-64 with max-pool, second
# order, 5 inner steps at train and test, inner lr 0.1 (1-shot) / 0.4 (5-shot), 15 queries,
# clip 3, Meta-Dropout meta-tested with 30 MC samples), except: metabatch 4 for both (the
# repository's later runfiles), meta_lr 1e-3 for both (metadrop uses 3e-4 for Meta-Dropout
# 1-shot over 40000 iterations, too slow for this budget), and ITERS iterations.
# Each (model, shot) pair is a separate job: `bash runfiles/metadrop_omni_small.sh maml 1`.
set -e
MODEL=${1:?usage: metadrop_omni_small.sh maml|metadrop 1|5 [extra flags]}
SHOT=${2:?usage: metadrop_omni_small.sh maml|metadrop 1|5 [extra flags]}
shift 2
DATA_ROOT=${DATA_ROOT:-../shared/data}
OUT=${OUT:-./results/omni_small}
if [ "$SHOT" = 1 ]; then LR=0.1; ITERS=${ITERS_1SHOT:-250}; else LR=0.4; ITERS=${ITERS_5SHOT:-150}; fi
if [ "$MODEL" = metadrop ]; then MC=30; else MC=1; fi
SAVEDIR=$OUT/${MODEL}_20way_${SHOT}shot
COMMON="--dataset omniglot --data_root $DATA_ROOT --test_alphabets Korean,Tagalog --model $MODEL --way 20 --shot $SHOT --query 15 --n_steps 5 --inner_lr $LR --meta_lr 1e-3 --savedir $SAVEDIR"
python main.py --mode meta_train $COMMON --metabatch 4 --n_train_iters $ITERS --n_test_mc_samp 1 --val_freq 50 --n_val_batches 5 --save_freq 50 "$@"
python main.py --mode meta_test $COMMON --metabatch 1 --n_test_iters ${TEST_EPISODES:-400} --n_test_mc_samp $MC "$@"
