"""IBKR adapter tests (fake gateway at the ib_async wire boundary)."""
