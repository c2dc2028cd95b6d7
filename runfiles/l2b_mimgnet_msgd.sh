#!/usr/bin/env bash
# Meta-SGD, mimgnet (in-distribution) / cub (out-of-distribution), l2b runfiles/mimgnet_msgd.sh: meta-train
# (5 inner steps, 80000 iterations, Adam 1e-4), then meta-test (10 inner steps, 1000 episodes) on the
# checkpoint with the best validation accuracy (ID + OOD). l2b's fixed cadences are explicit flags here:
# log every 100 iterations, validate and save every 10000 on 3000 episodes (3000 metabatches),
# balancing variables every 1000, all 10 checkpoints kept. l2b ran it on GPU 2 (runs in parallel); GPU=<id> picks one.
# Needs l2b's data (its miniImageNet has the 16 validation classes that checkpoint selection uses;
# metadrop's has none): python data/get_data.py --dataset mimgnet --source l2b && python data/get_data.py --dataset cub
# --l2b_padding: l2b's own computation, bug included: the zero rows that pad each support set to
# the metabatch's longest go through the base network (its batch-norm statistics include them) and
# count in N, the support size of the inner-loss and KL scaling. Our default drops them.
set -e
GPU=${GPU:-0}
python main.py --gpu_id $GPU --savedir './results/mimgnet/msgd' --id_dataset mimgnet --ood_dataset cub --model taml --l2b_padding --metabatch 1 --way 5 --max_shot 50 --query 15 --alpha_on --mode meta_train --n_steps 5 --n_train_iters 80000 --meta_lr 1e-4 --print_freq 100 --val_freq 10000 --save_freq 10000 --n_val_batches 3000 --balance_freq 1000 --max_to_keep 10 "$@"
python main.py --gpu_id $GPU --savedir './results/mimgnet/msgd' --id_dataset mimgnet --ood_dataset cub --model taml --l2b_padding --metabatch 1 --way 5 --max_shot 50 --query 15 --alpha_on --mode meta_test --n_steps 10 --n_test_episodes 1000 --n_mc_samples 0 "$@"
