#!/usr/bin/env bash
# Meta-Dropout, miniImageNet 5-way 5-shot (metadrop README and runfiles): meta-train, then meta-test with 30 MC samples.
# Needs the data: python data/get_data.py --dataset mimgnet
# --reuse_task_classes: metadrop's data.py draws one class set per call and gives it to every
# task of the metabatch (meta-training and its validation; the metabatch-1 meta-test is
# unaffected). The original's numbers come from that sampler, so this runfile reproduces it;
# our default and our own runfiles draw classes per task.
set -e
python main.py --gpu_id 0 --dataset mimgnet --model metadrop --savedir './results/metadrop/mimgnet_5shot' --mode 'meta_train' --metabatch 4 --inner_lr 0.01 --n_steps 5 --way 5 --shot 5 --query 15 --n_train_iters 60000 --meta_lr 1e-4 --n_test_mc_samp 1 --reuse_task_classes "$@"
python main.py --gpu_id 0 --dataset mimgnet --model metadrop --savedir './results/metadrop/mimgnet_5shot' --mode 'meta_test' --metabatch 1 --inner_lr 0.01 --n_steps 5 --way 5 --shot 5 --query 15 --n_train_iters 60000 --meta_lr 1e-4 --n_test_mc_samp 30 --reuse_task_classes "$@"
