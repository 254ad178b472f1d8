"""NAS-Bench-201's benchmark: its files (and NATS-Bench's topology files) read and written, cells looked
up as the official APIs answer, and a benchmark of a user's own data built cell by cell."""
from .files import BenchmarkError, read_file, write_nats_dir, write_nats_file, write_pth
from .query import HPS, Benchmark201
from .records import EVAL_SETS, cell_record, run_record

__all__ = ["EVAL_SETS", "HPS", "Benchmark201", "BenchmarkError", "cell_record", "read_file", "run_record",
           "write_nats_dir", "write_nats_file", "write_pth"]
