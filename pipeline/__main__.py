"""Command line: ``python -m pipeline {discover,fetch,coregister,shard,validate,run,bench}``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.build_lock import BuildLockedError, build_lock
from pipeline.cluster import Executor, executor
from pipeline.failures import NothingUsableError
from pipeline.params import PARAMS_PATH, ParamsError, PipelineParams, load_params

DESCRIPTION = """\
Build GeoPile-2 from STAC sources, one stage at a time or all at once:

  discover    find the items of the configured collections (static catalog or STAC API)
              -> <work_dir>/items.parquet
  fetch       make every asset local and verified (content-addressed cache; local files are
              checked in place) -> <work_dir>/fetched.parquet
  coregister  warp paired sensors onto the reference grid, cut chips, measure residual shifts
              -> <work_dir>/chips/<source>/<item>.npz + .chunks, qa.csv, coregister.json
  shard       write the chips into the sharded Zarr v3 store -> <store>
  validate    re-open the store, check it, write reports/geopile2.{json,md}
  run         all of the above
  bench       the pipeline benchmarks, apart from the stages (python -m pipeline bench --help;
              the same as python -m pipeline.benchmarks)

Parameters come from the `pipeline` section of params.yaml. Bad inputs are listed with item,
path and reason in <work_dir>/failures/<stage>.json and skipped; the exit code is non-zero only
when a stage produced nothing usable, validate found the store damaged or unlike the build's
records, or another build holds the work dir or the store (<work_dir>.lock, <store>.lock: one
build at a time). Every stage resumes after a crash.
"""


def _stage(name: str) -> Callable[[PipelineParams, Executor, bool], Path]:
    from pipeline import stages, validate

    table: dict[str, Callable[[PipelineParams, Executor, bool], Path]] = {
        "discover": stages.run_discover,
        "fetch": stages.run_fetch,
        "coregister": stages.run_coregister,
        "shard": stages.run_shard,
        "validate": lambda p, e, q: validate.run_validate(p, e),
    }
    return table[name]


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m pipeline``: one stage or all of them (``bench``: the benchmarks).

    Args:
        argv: the arguments after the command (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 when every stage ran; 1 when a stage produced nothing usable,
        validate found the store damaged or unlike the build's records, or another build holds
        the lock; 2 on a bad parameter file (argparse exits with 2 on bad arguments); for
        ``bench``, the benchmarks' status.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # the benchmarks' own command line
        from pipeline.benchmarks.__main__ import main as bench

        return bench(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "stage", choices=["discover", "fetch", "coregister", "shard", "validate", "run"]
    )
    parser.add_argument(
        "--params", type=Path, default=PARAMS_PATH, help="parameter file (default: params.yaml)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="dask worker processes (default: params; 0 = this process only)",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        help="address of a running dask scheduler to use instead of a "
        "LocalCluster, e.g. tcp://10.0.0.5:8786",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    from pipeline.validate import StoreValidationError  # (as every stage does: not for --help)

    try:
        params = load_params(args.params)
    except ParamsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    workers = params.workers if args.workers is None else args.workers
    names = (
        ["discover", "fetch", "coregister", "shard", "validate"]
        if args.stage == "run"
        else [args.stage]
    )
    parallel = {"discover", "fetch", "coregister", "shard", "validate"}
    needs_cluster = bool(parallel & set(names))
    try:
        with build_lock(params), executor(workers if needs_cluster else 0, args.scheduler) as ex:
            for name in names:
                start = time.perf_counter()
                try:
                    output = _stage(name)(params, ex, not args.quiet)
                except (NothingUsableError, StoreValidationError) as error:
                    print(f"{name}: {error}", file=sys.stderr)
                    return 1
                print(f"{name}: {time.perf_counter() - start:.1f} s -> {output}")
    except BuildLockedError as error:
        print(f"{args.stage}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["bench"]:  # measured under the allocator settings of the workers
        from pipeline.benchmarks.__main__ import restart_with_allocator_environ

        restart_with_allocator_environ(sys.argv[2:])
    sys.exit(main())
