#!/usr/bin/env bash
# Rebuild the bundled terramind_sim_micro model (tokenizers, then TerraMind) from simulated data, in place
# (terratim/assets/sim_micro). About 20 minutes on 2 CPU cores. Run from the repository root.
set -euo pipefail
terratim train-tokenizer -c configs/pretrain/sim_micro_tokenizer_lulc.yaml --overwrite
terratim train-tokenizer -c configs/pretrain/sim_micro_tokenizer_dem.yaml --overwrite
terratim pretrain -c configs/pretrain/sim_micro.yaml --overwrite
