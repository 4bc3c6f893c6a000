"""Support for tests, benchmarks, the quick-start and the GPU check, on any device: a tiny random
model builder (:mod:`~verl_lpreg.testing.tiny_model`), hand-built rollout rows for verl's engine
worker (:mod:`~verl_lpreg.testing.worker_batch`), our trainer config composed in-process
(:mod:`~verl_lpreg.testing.trainer_config`) and a rank's torch.distributed environment
(:mod:`~verl_lpreg.testing.process_env`). Importing it changes nothing in verl (unlike
:mod:`verl_lpreg.cpu`, the CPU platform harness); the product's modules never import it.
"""
