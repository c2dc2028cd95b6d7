#!/usr/bin/env bash
# Our own: LEO vs MAML on the two official Omniglot subsets (images_background_small1/2.zip,
# 8 alphabets, 242 characters x 4 rotations), alphabet-disjoint: meta-test on Korean and
# Tagalog, validation on Latin, meta-train on the other five; 5-way 1-shot and 5-shot.
# 1. benchmarks/omniglot_embeddings.py pretrains this project's Conv4-64 as a classifier of
#    the meta-train classes only and writes the 64-d features of every image of the three
#    splits in LEO's pickle layout (population batch-norm statistics of the meta-train
#    images, so an embedding does not depend on its batch);
# 2. LEO on them (--dataset leo_custom) with the README's miniImageNet hyperparameters for the
#    shot, float32, LEO_ITERS steps (default 3000), validation every 500 steps on 10 x 200
#    episodes, test on 10000 episodes of 5 classes x 20 drawings (all 20 - K others as
#    queries: --total_examples_per_class 20) on the best-validated checkpoint;
# 3. MAML (metadrop Conv4-64 on the images, second order, 5 inner steps lr 0.1, 10 at test,
#    metabatch 8, Adam 1e-3, clip 3, 15 queries) on the same split for MAML_ITERS (600)
#    iterations, tested on 1000 episodes. MAML=0 skips it.
set -e
DATA_ROOT=${DATA_ROOT:-../shared/data}
OUT=${OUT:-./results/leo_omni}
EMB=$OUT/embeddings
HP1="--outer_lr=2.739071e-4 --l2_penalty_weight=3.623413e-10 --orthogonality_penalty_weight=0.188103 --dropout_rate=0.307651 --kl_weight=0.756143 --encoder_penalty_weight=5.756821e-6"
HP5="--outer_lr=4.102361e-4 --l2_penalty_weight=8.540338e-9 --orthogonality_penalty_weight=1.523998e-3 --dropout_rate=0.300299 --kl_weight=0.466387 --encoder_penalty_weight=2.661608e-7"
LEO="--model leo --dataset leo_custom --data_path $EMB --total_examples_per_class 20 --nouse_64bits_dtype"
LEO_TRAIN="--num_steps_limit ${LEO_ITERS:-3000} --checkpoint_steps 500"
MAML_COMMON="--dataset omniglot --data_root $DATA_ROOT --test_alphabets Korean,Tagalog --val_alphabets Latin --model maml --way 5 --query 15 --n_steps 5 --n_test_steps 10 --inner_lr 0.1 --meta_lr 1e-3 --val_freq 200 --n_val_batches 10 --save_freq 100 --metabatch 8"
[ -f "$EMB/pretrain.json" ] || python -m benchmarks.omniglot_embeddings --data_root $DATA_ROOT --out $EMB --test_alphabets Korean,Tagalog --val_alphabets Latin
python main.py $LEO $HP1 --num_tr_examples_per_class 1 --checkpoint_path $OUT/leo_5way_1shot $LEO_TRAIN "$@"
python main.py $LEO $HP1 --num_tr_examples_per_class 1 --checkpoint_path $OUT/leo_5way_1shot --evaluation_mode "$@"
python main.py $LEO $HP5 --num_tr_examples_per_class 5 --checkpoint_path $OUT/leo_5way_5shot $LEO_TRAIN "$@"
python main.py $LEO $HP5 --num_tr_examples_per_class 5 --checkpoint_path $OUT/leo_5way_5shot --evaluation_mode "$@"
[ "${MAML:-1}" = 0 ] && exit 0
python main.py --mode meta_train --savedir $OUT/maml_5way_1shot --shot 1 --n_train_iters ${MAML_ITERS:-600} $MAML_COMMON "$@"
python main.py --mode meta_test --savedir $OUT/maml_5way_1shot --shot 1 --n_test_iters 1000 $MAML_COMMON "$@"
python main.py --mode meta_train --savedir $OUT/maml_5way_5shot --shot 5 --n_train_iters ${MAML_ITERS:-600} $MAML_COMMON "$@"
python main.py --mode meta_test --savedir $OUT/maml_5way_5shot --shot 5 --n_test_iters 1000 $MAML_COMMON "$@"
