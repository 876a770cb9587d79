"""``fedledger explorer``: a local web page on a task, its rounds, models, rewards and network.

:mod:`~fedledger.explorer.data` reads a run directory or a task on a JSON-RPC chain into one
:class:`~fedledger.explorer.data.Snapshot` through the existing readers (the run directory's
format, the ledger's typed events, ``task_status``, the nodes' round records, report.json);
:mod:`~fedledger.explorer.views` turns a snapshot into what each page shows (pure functions,
tested without a browser); :mod:`~fedledger.explorer.charts` draws the charts as SVG;
:mod:`~fedledger.explorer.app` serves the pages (Starlette, Jinja2, uvicorn) on 127.0.0.1,
with a per-round audit by :meth:`fedledger.audit.Auditor.audit_round`. docs/explorer.md.
"""
