"""Pandas/numpy glue between stored rows and the numeric kernels of :mod:`portfolio_pipeline.quant`.

Nothing here does I/O: functions take frames (rows read by the Dagster layer) and return
frames or row dicts to store.  The schema of ``config/pricing.yaml`` lives in
:mod:`portfolio_pipeline.config.pricing`.
"""
