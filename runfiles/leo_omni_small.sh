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
[ -f "$EMB/pretrain.json" ] || python -m benchmarks.omniglot_embeddings --data_root $DATA_ROOT --out $EMB --test_alphabets Korean,Tagalog --val_alphabets Latin
for SHOT in 1 5; do
  if [ "$SHOT" = 1 ]; then
    HPARAMS="--outer_lr=2.739071e-4 --l2_penalty_weight=3.623413e-10 --orthogonality_penalty_weight=0.188103 --dropout_rate=0.307651 --kl_weight=0.756143 --encoder_penalty_weight=5.756821e-6"
  else
    HPARAMS="--outer_lr=4.102361e-4 --l2_penalty_weight=8.540338e-9 --orthogonality_penalty_weight=1.523998e-3 --dropout_rate=0.300299 --kl_weight=0.466387 --encoder_penalty_weight=2.661608e-7"
  fi
  COMMON="--model leo --dataset leo_custom --data_path $EMB --num_tr_examples_per_class $SHOT --total_examples_per_class 20 --checkpoint_path $OUT/leo_5way_${SHOT}shot --nouse_64bits_dtype $HPARAMS"
  python main.py $COMMON --num_steps_limit ${LEO_ITERS:-3000} --checkpoint_steps 500 "$@"
  python main.py $COMMON --evaluation_mode "$@"
done
[ "${MAML:-1}" = 0 ] && exit 0
MAML_COMMON="--dataset omniglot --data_root $DATA_ROOT --test_alphabets Korean,Tagalog --val_alphabets Latin --model maml --way 5 --query 15 --n_steps 5 --n_test_steps 10 --inner_lr 0.1 --meta_lr 1e-3 --val_freq 200 --n_val_batches 10 --save_freq 100 --metabatch 8"
for SHOT in 1 5; do
  python main.py --mode meta_train --savedir $OUT/maml_5way_${SHOT}shot --shot $SHOT --n_train_iters ${MAML_ITERS:-600} $MAML_COMMON "$@"
  python main.py --mode meta_test --savedir $OUT/maml_5way_${SHOT}shot --shot $SHOT --n_test_iters 1000 $MAML_COMMON "$@"
done
