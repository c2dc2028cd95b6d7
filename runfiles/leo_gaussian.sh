#!/usr/bin/env bash
# Our own: LEO on synthetic embeddings with a known Bayes accuracy (benchmarks/leo_gaussian.py:
# class-conditional Gaussians in 640 dimensions whose means lie in a random 16-dim subspace;
# 64 / 16 / 20 classes x 600 examples, miniImageNet's shape). 5-way 1-shot then 5-shot, each with the
# README's miniImageNet hyperparameters for its shot, float32 as the original's
# runner, ITERS_1SHOT / ITERS_5SHOT steps (default 12000 / 8000) validating every 500 on 2 x 200 episodes, then the
# original's test protocol (10000 episodes, all 600 - K other images of each class as
# queries) on the best-validated checkpoint. bayes.json in the data folder holds the
# accuracy of the Bayes-optimal rule on the test classes, to compare with.
set -e
DATA=${DATA:-./results/leo_gauss/data}
OUT=${OUT:-./results/leo_gauss}
HP1="--outer_lr=2.739071e-4 --l2_penalty_weight=3.623413e-10 --orthogonality_penalty_weight=0.188103 --dropout_rate=0.307651 --kl_weight=0.756143 --encoder_penalty_weight=5.756821e-6"
HP5="--outer_lr=4.102361e-4 --l2_penalty_weight=8.540338e-9 --orthogonality_penalty_weight=1.523998e-3 --dropout_rate=0.300299 --kl_weight=0.466387 --encoder_penalty_weight=2.661608e-7"
COMMON="--model leo --dataset leo_custom --data_path $DATA --nouse_64bits_dtype"
TRAIN="--checkpoint_steps 500 --n_val_batches 2"
[ -f "$DATA/bayes.json" ] || python -m benchmarks.leo_gaussian --out "$DATA"
python main.py $COMMON $HP1 --num_tr_examples_per_class 1 --checkpoint_path $OUT/leo_1shot --num_steps_limit ${ITERS_1SHOT:-12000} $TRAIN "$@"
python main.py $COMMON $HP1 --num_tr_examples_per_class 1 --checkpoint_path $OUT/leo_1shot --evaluation_mode "$@"
python main.py $COMMON $HP5 --num_tr_examples_per_class 5 --checkpoint_path $OUT/leo_5shot --num_steps_limit ${ITERS_5SHOT:-8000} $TRAIN "$@"
python main.py $COMMON $HP5 --num_tr_examples_per_class 5 --checkpoint_path $OUT/leo_5shot --evaluation_mode "$@"
