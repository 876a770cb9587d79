"""Running nodes and tasks: one node of a deployment (:mod:`~fedledger.run.node`), or a whole
task on this machine (:mod:`~fedledger.run.task`): in this process
(:mod:`~fedledger.run.local`) or one OS process per node (:mod:`~fedledger.run.processes`),
merged into one report (:mod:`~fedledger.run.results`)."""
