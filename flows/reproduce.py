"""The paper's claims checked on the model a user has, as a Prefect flow: methods x tasks x seeds,
the data-size curve, which biases move, and a claims table, all under one MLflow run.

    python flows/reproduce.py --data-dir ../shared/data/glue              # --budget small
    python flows/reproduce.py --budget paper --model bert-base-cased      # on a GPU
"""

from __future__ import annotations

import json

from bitfit.entry import exit_now, run_command
from bitfit.interrupts import catch_signals
from bitfit.settings import quiet_environment


if __name__ == "__main__":  # --help and a mistake in the flags are answered before Prefect loads
    from bitfit.commands import parser

    parser("reproduce", __doc__).parse_args()

quiet_environment()  # before Prefect reads its settings

from prefect import flow  # noqa: E402

from bitfit import commands, orchestrate, reproduce  # noqa: E402
from bitfit.services import refuse_secrets  # noqa: E402


@flow(name="bitfit-reproduce", flow_run_name="reproduce-{budget}")
def reproduce_flow(tasks: tuple[str, ...] | None = None,
                   methods: tuple[str, ...] = tuple(reproduce.METHODS),
                   budget: str = "small", seeds: int | None = None,
                   max_train_samples: int | None = None, max_eval_samples: int | None = None,
                   epochs: int | None = None, max_steps: int | None = None,
                   grid_points: int | None = None,
                   curve_task: str | None = "sst2", curve_sizes: tuple[int, ...] | None = None,
                   curve_seeds: int | None = None, model: str | None = None,
                   pooling: str = "auto", data_dir: str | None = None,
                   train_file: str | None = None, dev_file: str | None = None,
                   text_columns: str = "sentence", label_column: str = "label",
                   regression: bool = False, columns: str | None = None, device: str = "auto",
                   processes: int = 1, name: str | None = None,
                   experiment: str = reproduce.EXPERIMENT, storage: str | None = None,
                   tracking_uri: str | None = None, home: str | None = None) -> dict:
    """Main table (tasks x methods x seeds, each method's learning rate from a small study),
    size curve, bias movement and the claims' verdicts; the report as an MLflow artifact and a
    Prefect artifact. ``budget``: small (a 2-core CPU, at most an hour) or paper; ``tasks``
    defaults to the budget's. A task in ``tasks`` that is not a GLUE task is read from
    ``train_file`` and ``dev_file``."""
    config = reproduce.ReproduceConfig.of(locals())
    refuse_secrets(storage=storage, tracking_uri=tracking_uri)
    with catch_signals():  # a signal is recorded, and goes to the flow engine's handler too
        return reproduce.run(config, phase=orchestrate.as_task,
                             report=orchestrate.PrefectReport())


def main(argv: list[str] | None = None) -> int:
    args = commands.parser("reproduce", __doc__).parse_args(argv)

    def work() -> dict:
        config = commands.reproduce_config(args)
        with orchestrate.prefect_started(config.model, config.pooling):  # the model loads too
            config = reproduce.check(config)
        return reproduce_flow(**orchestrate.flow_fields(reproduce_flow, config))

    return run_command(work, show=lambda r: print(json.dumps(r, default=str)) if args.json
                       else reproduce.print_summary(r))


if __name__ == "__main__":
    exit_now(main())
