"""The whole pipeline as a Prefect flow: prepare -> BitFit study -> full fine-tuning baseline
study -> final multi-seed evaluation of both on GLUE dev -> comparison report, every run in MLflow.

    python flows/search.py --task cola --data-dir ../shared/data/glue
    python flows/search.py --task cola --data-dir ../shared/data/glue --quick   # about 6 minutes

Each phase of ``bitfit.pipeline.run`` is a Prefect task; with ``--workers K`` each study runs as K
runs of the ``bitfit-study/worker`` deployment on a work pool. By default the studies select on a
validation split carved from train (10%, seeded, stratified), keeping GLUE dev for the final
evaluation; ``--select-on dev`` follows the paper's protocol. It prints the best trials, the
comparison table and the ``mlflow ui`` command that shows it all (``--json``: one JSON object).
"""

from __future__ import annotations

import dataclasses
import json

from bitfit.entry import exit_now, run_command
from bitfit.interrupts import catch_signals
from bitfit.settings import quiet_environment


if __name__ == "__main__":  # --help and a mistake in the flags are answered before Prefect loads
    from bitfit.commands import parser

    parser("search", __doc__).parse_args()

quiet_environment()  # before Prefect reads its settings

from prefect import flow  # noqa: E402

from bitfit import commands, orchestrate, pipeline  # noqa: E402
from bitfit.pipeline import ExtraMethod, Pooling, SelectOn  # noqa: E402
from bitfit.services import refuse_secrets  # noqa: E402


# A worker that fails is run once more: the study resumes, retrying the trial it lost. Its runs
# are named by whoever starts them (run_workers: <study>-worker-<i>).
@flow(name="bitfit-study", retries=1)
def study(task: str = "cola", data_dir: str | None = None, train_file: str | None = None,
          dev_file: str | None = None, text_columns: str = "sentence", label_column: str = "label",
          regression: bool = False, columns: str | None = None,
          max_train_samples: int | None = None, max_length: int | None = None,
          model: str | None = None, pooling: Pooling = "auto", device: str = "auto",
          threads: int | None = None, space: str = "bitfit", n_trials: int | None = None,
          select_on: SelectOn = "heldout", study_name: str | None = None,
          storage: str | None = None, tracking_uri: str | None = None,
          home: str | None = None, experiment: str | None = None, worker: int = 0) -> dict:
    """One worker of a study: load the model once, then run trials until the study's budget
    is spent, together with every other worker on the same storage. ``worker`` is its index:
    with the device ``auto`` it trains on GPU ``worker`` mod the GPUs its machine has."""
    config = pipeline.Config.of(locals())  # the parameters, as the pipeline's config
    refuse_secrets(storage=storage, tracking_uri=tracking_uri)
    here = pipeline.worker_device(device, worker)  # counted on this machine, not the caller's
    with catch_signals():  # a signal is recorded, and goes to the flow engine's handler too
        return pipeline.run(dataclasses.replace(config, baseline=False, seeds=0, device=here),
                            phase=orchestrate.as_task, report=orchestrate.PrefectReport())


@flow(name="bitfit-search", flow_run_name="{task}-search")
def search(task: str = "cola", data_dir: str | None = None, train_file: str | None = None,
           dev_file: str | None = None, test_file: str | None = None,
           text_columns: str = "sentence", label_column: str = "label", regression: bool = False,
           columns: str | None = None, max_train_samples: int | None = None,
           max_length: int | None = None, model: str | None = None, pooling: Pooling = "auto",
           device: str = "auto", threads: int | None = None, space: str = "bitfit",
           baseline_space: str = "full_ft", quick: bool = False, n_trials: int | None = None,
           select_on: SelectOn = "heldout", study_name: str | None = None, baseline: bool = True,
           baseline_study: str | None = None, workers: int = 1,
           seeds: int | None = None,
           extra_methods: tuple[ExtraMethod, ...] = (), eval_processes: int | None = None,
           trial_processes: int | None = None, promote: bool = False,
           storage: str | None = None, tracking_uri: str | None = None,
           home: str | None = None, experiment: str | None = None) -> dict:
    """Prepare -> BitFit study -> full fine-tuning study -> final evaluation -> report.

    The parameters are ``bitfit.pipeline.Config``'s (``python flows/search.py --help``). With
    ``workers`` K > 1 each study runs as K runs of the ``bitfit-study/worker`` deployment on its
    work pool, sharing the study on a server storage (PostgreSQL) and an MLflow server.
    """
    config = pipeline.Config.of(locals())  # the parameters, as the pipeline's config
    refuse_secrets(storage=storage, tracking_uri=tracking_uri)
    with catch_signals():  # a signal is recorded, and goes to the flow engine's handler too
        return pipeline.run(config, phase=orchestrate.as_task,
                            on_workers=orchestrate.on_workers, report=orchestrate.PrefectReport())


def main(argv: list[str] | None = None) -> int:
    args = commands.parser("search", __doc__).parse_args(argv)

    def work() -> dict:
        # Checked here, before the flow runs, while Prefect's API starts: the passwords never
        # reach the flow run's parameters. The model loads meanwhile too, and the side-by-side
        # processes start loading it.
        config = commands.config(args)
        with orchestrate.prefect_started(config.model, config.pooling) as ahead:
            config = pipeline.check_search(config)
            assert config.storage and config.tracking_uri
            orchestrate.check_workers(config.workers, config.storage, config.tracking_uri)
            ahead.processes = pipeline.side_processes(config)  # they start with the model
        return search(**dataclasses.asdict(config))

    return run_command(work, show=lambda s: print(json.dumps(s)) if args.json
                       else pipeline.print_summary(s))


if __name__ == "__main__":
    exit_now(main())
