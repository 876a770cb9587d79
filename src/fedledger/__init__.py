"""fedledger: decentralized federated learning with a verifiable Web3 ledger.

The public API (see README.md, "As a library", and examples/own_model.py)::

    import fedledger

    data = fedledger.site_data("site_a.csv", label_column="diagnosis", num_classes=2)
    fedledger.run_node("node.toml", model=my_module_factory, data=data)   # one site
    fedledger.run_task("task.toml", out="runs/x", model=my_module_factory,
                       data=["a.csv", "b.csv", "c.csv"], label_column="diagnosis")

Nothing heavy is imported until used: ``import fedledger`` does not import torch or web3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AggregationConfig",
    "Dataset",
    "FedledgerError",
    "NodeConfig",
    "NodeData",
    "Report",
    "RunFailed",
    "TaskConfig",
    "__version__",
    "aggregate_round",
    "export_model",
    "load_config",
    "load_node_config",
    "make_node",
    "run_node",
    "run_task",
    "site_data",
]

_WHERE = {
    "AggregationConfig": "fedledger.config",
    "TaskConfig": "fedledger.config",
    "load_config": "fedledger.config",
    "NodeConfig": "fedledger.config.node",
    "load_node_config": "fedledger.config.node",
    "Dataset": "fedledger.data",
    "NodeData": "fedledger.data",
    "FedledgerError": "fedledger.errors",
    "RunFailed": "fedledger.errors",
    "Report": "fedledger.report",
    "aggregate_round": "fedledger.aggregation.round",
    "export_model": "fedledger.export",
    "make_node": "fedledger.api",
    "run_node": "fedledger.api",
    "run_task": "fedledger.api",
    "site_data": "fedledger.api",
}

if TYPE_CHECKING:
    from fedledger.aggregation.round import aggregate_round
    from fedledger.api import make_node, run_node, run_task, site_data
    from fedledger.config import AggregationConfig, TaskConfig, load_config
    from fedledger.config.node import NodeConfig, load_node_config
    from fedledger.data import Dataset, NodeData
    from fedledger.errors import FedledgerError, RunFailed
    from fedledger.export import export_model
    from fedledger.report import Report


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fedledger' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
