#!/bin/bash
# Ours: pretrain + MTL (ResNet-12) vs MAML (Conv4) on the real Omniglot subsets of ../shared
# (both background _small zips, 242 characters x 4 rotations), alphabet-disjoint: meta-test
# on Korean + Tagalog, validation on Latin, (pre-/meta-)training on the other five alphabets.
# Every method and setting gets the same wall-time budget BUDGET (seconds, start-up and
# tracing included, --time_budget); MTL's pre-training (PRETRAIN_BUDGET, shared by its four
# runs) counts in each of them, so each MTL meta-train run gets META_BUDGET = BUDGET -
# PRETRAIN_BUDGET (set all three together).
# A run stopped by its budget saves its checkpoint and is meta-tested from it. MTL sees the
# 28x28 grey images replicated to three channels at --img_size 28 (28 -> 14 -> 7 -> 3 -> 1);
# MAML the 28x28 grey images. Meta-test: MTL's protocol (600 episodes, 100 steps, flipped
# support, K queries per class); MAML's (600 episodes, 10 steps, 15 queries per class).
# The README's numbers: BUDGET=1500 PRETRAIN_BUDGET=600 META_BUDGET=900, the MAML and the MTL
# commands run side by side, each pinned to one core (taskset).
set -e
DATA_ROOT=${DATA_ROOT:-../shared/data}
OUT=${OUT:-./results/mtl_omni_small}
BUDGET=${BUDGET:-1500}
PRETRAIN_BUDGET=${PRETRAIN_BUDGET:-600}
META_BUDGET=${META_BUDGET:-900}
DATA="--dataset omniglot --data_root $DATA_ROOT --omniglot_source small --test_alphabets Korean,Tagalog --val_alphabets Latin"
MTL="--model mtl $DATA --img_size 28 --meta_intrain_val_sample 100 --val_freq 100000 --print_freq 10 --n_train_iters 100000 --pretrain_dir $OUT/mtl/pretrain"
MAML="--model maml $DATA --query 15 --n_steps 5 --n_test_steps 10 --inner_lr 0.1 --meta_lr 1e-3 --val_freq 100000 --n_val_batches 5 --save_freq 100 --way 5 --metabatch 8 --n_train_iters 100000 --n_test_iters 600"
python main.py --mode meta_train --savedir $OUT/maml_1shot --shot 1 --time_budget $BUDGET $MAML "$@"
python main.py --mode meta_test --savedir $OUT/maml_1shot --shot 1 $MAML "$@"
python main.py --mode meta_train --savedir $OUT/maml_5shot --shot 5 --time_budget $BUDGET $MAML "$@"
python main.py --mode meta_test --savedir $OUT/maml_5shot --shot 5 $MAML "$@"
python main.py --mode pretrain --savedir $OUT/mtl --pretrain_iterations 100000 --pre_save_step 100 --pre_print_step 10 --time_budget $PRETRAIN_BUDGET $MTL "$@"
python main.py --mode meta_train --savedir $OUT/mtl/1shot --shot 1 --pre_iter -1 --time_budget $META_BUDGET $MTL "$@"
python main.py --mode meta_test --savedir $OUT/mtl/1shot --shot 1 $MTL "$@"
python main.py --mode meta_train --savedir $OUT/mtl/1shot_hard_task --shot 1 --hard_task --pre_iter -1 --time_budget $META_BUDGET $MTL "$@"
python main.py --mode meta_test --savedir $OUT/mtl/1shot_hard_task --shot 1 --hard_task $MTL "$@"
python main.py --mode meta_train --savedir $OUT/mtl/5shot --shot 5 --pre_iter -1 --time_budget $META_BUDGET $MTL "$@"
python main.py --mode meta_test --savedir $OUT/mtl/5shot --shot 5 $MTL "$@"
python main.py --mode meta_train --savedir $OUT/mtl/5shot_hard_task --shot 5 --hard_task --pre_iter -1 --time_budget $META_BUDGET $MTL "$@"
python main.py --mode meta_test --savedir $OUT/mtl/5shot_hard_task --shot 5 --hard_task $MTL "$@"
