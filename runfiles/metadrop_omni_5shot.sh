#!/usr/bin/env bash
# Meta-Dropout, Omniglot 20-way 5-shot (metadrop README: metabatch 6, 40000 iterations; its later runfiles use 4 and 60000): meta-train, then meta-test with 30 MC samples.
# Needs the data: python data/get_data.py --dataset omniglot --source metadrop
set -e
python main.py --gpu_id 0 --dataset omniglot --model metadrop --savedir './results/metadrop/omni_5shot' --mode 'meta_train' --metabatch 6 --n_steps 5 --inner_lr 0.4 --way 20 --shot 5 --query 15 --n_train_iters 40000 --meta_lr 1e-3 --n_test_mc_samp 1 "$@"
python main.py --gpu_id 0 --dataset omniglot --model metadrop --savedir './results/metadrop/omni_5shot' --mode 'meta_test' --metabatch 1 --n_steps 5 --inner_lr 0.4 --way 20 --shot 5 --query 15 --n_train_iters 40000 --meta_lr 1e-3 --n_test_mc_samp 30 "$@"
