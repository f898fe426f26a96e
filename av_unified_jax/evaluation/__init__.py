"""Evaluation: the model runner, constrained decoding, per-task evaluators, official-metric
scoring with bootstrap intervals, and the trivial baselines.

  runner.py     ModelRunner: the model on evaluation batches under jit (decoding or aux maps)
  decoding.py   constrained greedy decoding and beam search with a KV cache
  tasks.py      per-task ground truth, interpretation of outputs, scoring and files (TASKS)
  evaluator.py  Evaluator: a split -> results, intervals and predictions of every task
  intervals.py  95 % bootstrap intervals over videos
  baselines.py  trivial predictors fitted on the training split, scored by the same code
"""
