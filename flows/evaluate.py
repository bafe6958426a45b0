"""Final evaluation flow: the best configuration of a BitFit study and of a full fine-tuning
study, each trained with several seeds on the whole training split and compared on GLUE dev.

    python flows/evaluate.py --task cola --data-dir ../shared/data/glue \\
        --bitfit-study cola-bitfit --full-study cola-bitfit-full --seeds 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bitfit.entry import run_command
from bitfit.settings import quiet_environment

quiet_environment()  # before Prefect reads its settings
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling flows, however we are loaded

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from bitfit.settings import home_dir  # noqa: E402
from bitfit.pipeline import (EXTRA_METHODS, check_evaluation,  # noqa: E402
                             evaluate_studies, evaluation_name, print_report)
from prepare import load_model, prepare_data  # noqa: E402


@task(cache_policy=NO_CACHE)
def run_evaluation(base, data, *, storage: str, bitfit_study: str, full_study: str | None,
                   seeds: int, extra_methods: tuple[str, ...], tracking_uri: str,
                   home: str, name: str, processes: int | None = None) -> dict:
    """Train each method's best configuration with each seed; the comparison report."""
    return evaluate_studies(base, data, storage=storage, bitfit_study=bitfit_study,
                            full_study=full_study, seeds=seeds, extra_methods=extra_methods,
                            tracking_uri=tracking_uri, home=home, name=name,
                            processes=processes)


@flow(name="bitfit-evaluate")
def evaluate(task: str = "cola", bitfit_study: str = "cola-bitfit", full_study: str | None = None,
             storage: str | None = None, seeds: int = 5, extra_methods: tuple[str, ...] = (),
             model: str | None = None, data_dir: str | None = None,
             max_train_samples: int | None = None, max_length: int = 128,
             tracking_uri: str | None = None, home: str | None = None,
             processes: int | None = None) -> dict:
    """Best configs -> S seeds each on the whole training split -> comparison on dev.

    ``processes``: runs trained at once (default: one per core on a CPU, up to 4; 1: one after
    another)."""
    from bitfit.services import refuse_secrets

    refuse_secrets(storage=storage, tracking_uri=tracking_uri)
    home = str(home_dir(home))  # $BITFIT_HOME, else ./runs
    storage, tracking_uri = check_evaluation(
        task=task, seeds=seeds, processes=processes, max_train_samples=max_train_samples,
        extra_methods=tuple(extra_methods), storage=storage, tracking_uri=tracking_uri,
        home=home)
    base = load_model(model)
    data = prepare_data(base, task, data_dir=data_dir, max_length=max_length,
                        max_train_samples=max_train_samples, validation_fraction=None,
                        home=home)
    return run_evaluation(base, data, storage=storage,
                          bitfit_study=bitfit_study, full_study=full_study, seeds=seeds,
                          extra_methods=tuple(extra_methods),
                          tracking_uri=tracking_uri, home=home,
                          name=evaluation_name(bitfit_study, full_study, seeds),
                          processes=processes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cola")
    parser.add_argument("--bitfit-study", required=True)
    parser.add_argument("--full-study", default=None)
    parser.add_argument("--storage", default=None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--extra-methods", nargs="*", default=[], choices=EXTRA_METHODS)
    parser.add_argument("--model", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--home", default=str(home_dir()))
    parser.add_argument("--processes", type=int, default=None, help="runs trained at once "
                        "(default: one per core on a CPU, up to 4)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    def work() -> dict:
        from bitfit.services import check_prefect_api

        storage, tracking_uri = check_evaluation(
            task=args.task, seeds=args.seeds, processes=args.processes,
            max_train_samples=args.max_train_samples, extra_methods=tuple(args.extra_methods),
            storage=args.storage, tracking_uri=args.tracking_uri, home=args.home)
        check_prefect_api()
        return evaluate(task=args.task, bitfit_study=args.bitfit_study,
                        full_study=args.full_study, storage=storage, seeds=args.seeds,
                        extra_methods=tuple(args.extra_methods), model=args.model,
                        data_dir=args.data_dir, max_train_samples=args.max_train_samples,
                        tracking_uri=tracking_uri, home=args.home, processes=args.processes)

    return run_command(work, show=lambda r: print(json.dumps(r)) if args.json
                       else print_report(r))


if __name__ == "__main__":
    sys.exit(main())
