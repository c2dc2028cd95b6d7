#!/usr/bin/env bash
# MTL (yaoyao-liu/meta-transfer-learning, TF), FC100 (Fewshot-CIFAR100) 5-way 1-shot, with the settings
# of the original's run_experiment.py (PRE, then META):
# 1. pre-training: ResNet-12, Adam 1e-3 halved every 5000 iterations, batch 64, dropout keep
#    0.9, 20000 iterations, the backbone saved as weights-<i> every 1000 iterations, into
#    $PRETRAIN (shared by the 1-shot and 5-shot runfiles: a finished pre-training is not
#    run again, the command only says so);
# 2. meta-training from the iteration-10000 snapshot (PRE_ITER): metabatch 2, 15 queries per
#    class, 20 inner steps at base_lr 1e-3 on the FC, meta_lr 1e-3 halved every 1000
#    iterations down to 1e-4, 20000 iterations, validation every 100 on the same 600
#    episodes, a checkpoint every 100;
# 3. meta-test of the last checkpoint: 600 episodes, 100 inner steps, the support set doubled
#    by horizontal flips, 1 queries per class; the accuracy after every step in
#    meta_test.csv, the last one in meta_test.log.
# Data: $DATA_ROOT/fc100/{train,val,test}/<class>/<image> (84x84): python data/get_data.py --dataset fc100.
# --pretrain_class_num 64: the original's pre-training head keeps main.py's 64 outputs on
# FC100's 60 meta-train classes (run_experiment.py never sets it; four outputs are never a
# label but still share the softmax). Leave the flag out for a 60-way head (our default).
set -e
DATA_ROOT=${DATA_ROOT:-./data}
OUT=${OUT:-./results/mtl/fc100_1shot}
PRETRAIN=${PRETRAIN:-./results/mtl/fc100_pretrain}
COMMON="--model mtl --dataset fc100 --data_root $DATA_ROOT --backbone_arch resnet12 --way_num 5 --pretrain_dir $PRETRAIN"
python main.py --mode pretrain --savedir $OUT --pretrain_iterations 20000 --pre_lr 1e-3 --pre_lr_dropstep 5000 --pretrain_batch_size 64 --pretrain_dropout_keep 0.9 --pre_save_step 1000 --pretrain_class_num 64 $COMMON "$@"
python main.py --mode meta_train --savedir $OUT --shot_num 1 --pre_iter 10000 --metatrain_iterations 20000 --meta_batch_size 2 --train_base_epoch_num 20 --base_lr 1e-3 --meta_lr 1e-3 --lr_drop_step 1000 --min_meta_lr 1e-4 --meta_save_step 100 --meta_val_print_step 100 $COMMON "$@"
python main.py --mode meta_test --savedir $OUT --shot_num 1 --test_base_epoch_num 100 $COMMON "$@"
