"""Strategy tagging: legs -> strategies, persistent identity across sessions, P&L split.

Pure rules, no I/O, one module per concept:

* :mod:`~portfolio_pipeline.domain.strategies.legs`: the vocabulary -- a
  :class:`~portfolio_pipeline.domain.strategies.legs.Leg`, the strategy types, a
  recognised piece.
* :mod:`~portfolio_pipeline.domain.strategies.patterns`:
  :func:`~portfolio_pipeline.domain.strategies.patterns.decompose` splits the legs of one
  underlying (opened together) into recognised structures, greedily and
  deterministically (the tagging rules and their priority are listed there).
* :mod:`~portfolio_pipeline.domain.strategies.identity`:
  :func:`~portfolio_pipeline.domain.strategies.identity.assign_strategies` carries
  yesterday's strategies of an account forward to today's positions (identity,
  opened_on, parent links for rolls), applies manual claims and overrides, and tags the
  new lots with ``decompose``.
* :mod:`~portfolio_pipeline.domain.strategies.pnl`:
  :func:`~portfolio_pipeline.domain.strategies.pnl.allocate_pnl` splits each position's
  daily P&L between the strategies that held it, exactly (the strategy P&L of an
  account sums to the account's P&L).
* :mod:`~portfolio_pipeline.domain.strategies.settings`: the schema of
  ``config/strategies.yaml`` (manual overrides, Kelly sizing, liquidity and theta/vega
  settings).
"""
