from tests.gnn.conftest import one_thread  # noqa: F401  (the graph studies here: one thread)
