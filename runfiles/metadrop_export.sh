#!/usr/bin/env bash
# Export and plot (metadrop README "Visualization"): exports ten 2-way episodes of a trained
# model (default: the Meta-Dropout Omniglot 5-shot run of runfiles/metadrop_omni_5shot.sh;
# set SAVEDIR for another, e.g. ./results/maml/omni_5shot with --model maml) and draws the
# decision-boundary figures and the stochastic-feature pictures under $SAVEDIR/plot/.
# Needs the plot extra: pip install -e ".[plot]"
set -e
SAVEDIR=${SAVEDIR:-./results/metadrop/omni_5shot}
MODEL=${MODEL:-metadrop}
python main.py --gpu_id 0 --savedir "$SAVEDIR" --dataset 'omniglot' --model $MODEL --mode 'export' --metabatch 6 --n_steps 5 --inner_lr 0.4 --way 20 --shot 5 --query 15 --n_train_iters 40000 --meta_lr 1e-3 --n_test_mc_samp 1 "$@"
python plot.py --savedir "$SAVEDIR"
