#!/usr/bin/env bash
# cbfinn/maml, Omniglot 5-way 1-shot (its main.py usage line: --meta_batch_size=32 --update_batch_size=1 --update_lr=0.4 --num_updates=1): meta-train, then its test
# (test(): 600 episodes one at a time, 10 inner steps, as many queries per class as shots).
# Its computation: maml_conv4 (Glorot convs, BN shift only, eps 1e-3; stride-2 convs, no pooling, 64 filters), its losses
# --inner_loss maml_sum (xent = CE / K, summed by tf.gradients) and --outer_loss maml_sum
# (query CE / K summed per task, mean over the metabatch), TF1 Adam at its default meta_lr
# 1e-3, no meta-gradient clipping (--clip_value 0: it clips on miniImageNet only). --n_train_iters 59999 runs its 60000 iterations (ours count 0..n inclusive).
# Not reproduced by these flags: its data pipeline (Omniglot: 1100 meta-train + 100 validation
# characters and rotations drawn per class per task; ours: the 1200-character split with the
# rotations stored as classes) and its validation cadence (one metabatch every 500 iterations).
# Needs the data: python data/get_data.py --dataset omniglot
set -e
COMMON="--model maml --backbone maml_conv4 --inner_loss maml_sum --outer_loss maml_sum --dataset omniglot --meta_lr 1e-3 --way 5 --shot 1 --inner_lr 0.4 --n_steps 1 --clip_value 0"
python main.py --gpu_id 0 --mode meta_train --savedir './results/cbfinn/omni_5way_1shot' $COMMON --metabatch 32 --query 1 --n_train_iters 59999 --val_freq 500 --n_val_batches 1 --save_freq 1000 --print_freq 100 "$@"
python main.py --gpu_id 0 --mode meta_test --savedir './results/cbfinn/omni_5way_1shot' $COMMON --query 1 --metabatch 1 --n_test_steps 10 --n_test_iters 600 "$@"
