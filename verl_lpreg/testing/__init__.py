"""Support for tests, benchmarks, the quick-start and the GPU check, on any device: a tiny random
model builder (:mod:`~verl_lpreg.testing.tiny_model`) and hand-built rollout rows for verl's engine
worker (:mod:`~verl_lpreg.testing.worker_batch`). Importing it changes nothing in verl (unlike
:mod:`verl_lpreg.cpu`, the CPU platform harness); the product's modules never import it.
"""
