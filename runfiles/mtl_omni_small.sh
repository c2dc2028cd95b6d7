#!/bin/bash
# Ours: pretrain + MTL (ResNet-12) vs MAML (Conv4) on the real Omniglot subsets of ../shared
# (both background _small zips, 242 characters x 4 rotations), alphabet-disjoint: meta-test
# on Korean + Tagalog, validation on Latin, (pre-/meta-)training on the other five alphabets.
# Every method and setting gets the same wall-time budget BUDGET (seconds, start-up
# included); MTL's pre-training (PRETRAIN_BUDGET, shared by its four runs) counts in each of
# them, so each MTL meta-train run gets BUDGET - PRETRAIN_BUDGET. A run stopped by the
# budget (SIGTERM) saves its checkpoint and is meta-tested from it. MTL sees the 28x28 grey
# images replicated to three channels at --img_size 28 (28 -> 14 -> 7 -> 3 -> 1); MAML the
# 28x28 grey images. PART=maml or PART=mtl runs one half (e.g. one per core with taskset).
set -e
DATA_ROOT=${DATA_ROOT:-../shared/data}
OUT=${OUT:-./results/mtl_omni_small}
BUDGET=${BUDGET:-900}
PRETRAIN_BUDGET=${PRETRAIN_BUDGET:-360}
IMG_SIZE=${IMG_SIZE:-28}
PART=${PART:-all}
DATA="--dataset omniglot --data_root $DATA_ROOT --omniglot_source small --test_alphabets Korean,Tagalog --val_alphabets Latin"
MTL="--model mtl $DATA --img_size $IMG_SIZE --savedir $OUT/mtl --meta_intrain_val_sample 100 --val_freq 100000 --print_freq 10"
MAML="--model maml $DATA --query 15 --n_steps 5 --n_test_steps 10 --inner_lr 0.1 --meta_lr 1e-3 --val_freq 100000 --n_val_batches 5 --save_freq 100 --way 5 --metabatch 8"
budget() {   # budget SECONDS command...: stopped by SIGTERM at the budget (exit 124 is fine)
    local t=$1; shift
    timeout -s TERM "$t" "$@" || [ $? -eq 124 ]
}
if [ "$PART" != mtl ]; then
    for SHOT in 1 5; do
        budget "$BUDGET" python main.py --mode meta_train --savedir $OUT/maml_${SHOT}shot --shot $SHOT --n_train_iters 100000 $MAML "$@"
        python main.py --mode meta_test --savedir $OUT/maml_${SHOT}shot --shot $SHOT --n_test_iters 600 $MAML "$@"
    done
fi
if [ "$PART" != maml ]; then
    budget "$PRETRAIN_BUDGET" python main.py --mode pretrain $MTL --pretrain_iterations 100000 --pre_save_step 100 --pre_print_step 10 "$@"
    for SHOT in 1 5; do
        for HT in nohard_task hard_task; do
            D=$OUT/mtl/${SHOT}shot_$HT
            budget $((BUDGET - PRETRAIN_BUDGET)) python main.py --mode meta_train $MTL --savedir $D --pretrain_dir $OUT/mtl/pretrain --pre_iter -1 --shot $SHOT --$HT --n_train_iters 100000 "$@"
            python main.py --mode meta_test $MTL --savedir $D --shot $SHOT --$HT "$@"
        done
    done
fi
