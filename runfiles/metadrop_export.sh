#!/usr/bin/env bash
# Export and plot (metadrop README "Decision Boundary Visualization", its command): exports
# ten 2-way episodes of a trained model (default: the Meta-Dropout Omniglot 1-shot run of
# runfiles/metadrop_omni_1shot.sh; set SAVEDIR for another, e.g. ./results/maml/omni_1shot
# with MODEL=maml) and draws the decision-boundary figures and the stochastic-feature
# pictures under $SAVEDIR/plot/. Its episodes have fixed classes, so --reuse_task_classes
# would change nothing here.
# Needs the plot extra: pip install -e ".[plot]"
set -e
SAVEDIR=${SAVEDIR:-./results/metadrop/omni_1shot}
MODEL=${MODEL:-metadrop}
python main.py --gpu_id 0 --savedir "$SAVEDIR" --dataset 'omniglot' --model $MODEL --mode 'export' --metabatch 1 --n_steps 5 --inner_lr 0.1 --way 20 --shot 1 --query 15 --n_train_iters 60000 --meta_lr 1e-3 --n_test_mc_samp 30 "$@"
python plot.py --savedir "$SAVEDIR"
