"""What dst_dali measures, run from the repository root as `python -m bench.NAME`; each writes
its figures and the command that made them to bench/results/.

- Speed benchmarks (this folder): throughput (the loader against detectron2's and the CPU
  collage), collage_op (the operator), iteration_cost, dataset_scale, decoder_batching,
  collage_geometry; common and callgrind are what they share.
- bench.evidence: the experiments behind the README's claims (accuracy with its set, soak).
- bench.gpu: the acceptance kits of a GPU node (kernel_check needs python3 and numpy alone,
  loader_check the whole environment).
- bench.oracle: the independent numpy reference of a collage, for the tests and the GPU kit.
"""
