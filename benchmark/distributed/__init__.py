"""One model across processes: table-wise sharded embeddings + data-parallel dense MLPs.

Started by ``torchrun`` (or SLURM tasks) with ``train.distributed=true``:

- ``planner``      which rank owns which table (balanced by bytes, printable, a CLI);
- ``context``      rank/world from the launcher's environment, process groups with timeouts;
- ``exchange``     the differentiable all-to-all that moves ids out and embeddings back;
- ``sharded``      ``ShardedEmbedding``: each rank's own method over the tables it owns;
- ``init_values``  initial values drawn from the 1-process stream, so runs compare exactly;
- ``threshold``    one adaptive threshold for a pool shared across tables on many ranks;
- ``trainer``      ``DistributedTrainer``: the harness's ``Trainer`` over all of the above.
"""
