#!/usr/bin/env bash
# Meta-Dropout, Omniglot 20-way 1-shot (metadrop README, the specification: metabatch 8, 40000 iterations; the repository's later runfiles use 4 and 60000): meta-train, then meta-test with 30 MC samples.
# Needs the data: python data/get_data.py --dataset omniglot --source metadrop
# --reuse_task_classes: metadrop's data.py draws one class set per call and gives it to every
# task of the metabatch (meta-training and its validation; the metabatch-1 meta-test is
# unaffected). The original's numbers come from that sampler, so this runfile reproduces it;
# our default and our own runfiles draw classes per task.
set -e
python main.py --gpu_id 0 --dataset omniglot --model metadrop --savedir './results/metadrop/omni_1shot' --mode 'meta_train' --metabatch 8 --n_steps 5 --inner_lr 0.1 --way 20 --shot 1 --query 15 --n_train_iters 40000 --meta_lr 3e-4 --n_test_mc_samp 1 --reuse_task_classes "$@"
python main.py --gpu_id 0 --dataset omniglot --model metadrop --savedir './results/metadrop/omni_1shot' --mode 'meta_test' --metabatch 1 --n_steps 5 --inner_lr 0.1 --way 20 --shot 1 --query 15 --n_train_iters 40000 --meta_lr 3e-4 --n_test_mc_samp 30 --reuse_task_classes "$@"
