from tests.conftest import real_data_root  # noqa: F401  (the benchmarks read the real data like the tests)
