"""Code mode's trusted evaluation: the candidate's model is measured by code it cannot reach.

- `checkpoint_format`: the weights-only checkpoint (the safetensors layout: a JSON header and raw
  little-endian arrays; no pickle anywhere). Standard library only: it is also mounted read-only
  into the training and model containers.
- `model_server`: runs *inside* the model container (never imported by the host): builds the
  candidate's model from its source and checkpoint, answers forward passes over stdio.
- `channel`: the host's side of that stdio: binary frames, every size checked before it is read.
- `gates`: the checks a number must pass before it is accepted, each named (`vocabulary.Gate`).
- `evaluator`: the host's evaluator: holds the validation split, sends inputs, computes bits per byte.
- `code_trial`: one code-mode trial: the training container, then the gates and the evaluator.
"""
