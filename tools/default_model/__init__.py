"""The steps behind `python -m tools.make_default_model` (models/default's recipe).

  corpus.py     the Python standard library of this machine -> train.txt / heldout.txt
  tokenizer.py  our byte-level BPE trained on train.txt, checked id-for-id against `tokenizers`
  init.py       a fresh Mamba-2 HF checkpoint (our initialiser) that train-torch continues
  finish.py     the trained folder -> models/default-new (weights, tokenizer, README)
"""
