"""Final evaluation flow: the best configuration of a BitFit study and of a full fine-tuning
study, each trained with several seeds on the whole training split and compared on GLUE dev.

    python flows/evaluate.py --task cola --data-dir ../shared/data/glue \\
        --bitfit-study cola-bitfit --full-study cola-bitfit-full --seeds 5
"""

from __future__ import annotations

import json

from bitfit.entry import exit_now, run_command
from bitfit.interrupts import catch_signals
from bitfit.settings import quiet_environment


if __name__ == "__main__":  # --help and a mistake in the flags are answered before Prefect loads
    from bitfit.commands import parser

    parser("evaluate", __doc__).parse_args()

quiet_environment()  # before Prefect reads its settings

from prefect import flow  # noqa: E402

from bitfit import commands, orchestrate, pipeline  # noqa: E402
from bitfit.pipeline import ExtraMethod, Pooling  # noqa: E402
from bitfit.services import refuse_secrets  # noqa: E402


@flow(name="bitfit-evaluate", flow_run_name="{task}-evaluate")
def evaluate(bitfit_study: str = "cola-bitfit", full_study: str | None = None,
             task: str = "cola", data_dir: str | None = None, train_file: str | None = None,
             dev_file: str | None = None, test_file: str | None = None,
             text_columns: str = "sentence", label_column: str = "label",
             regression: bool = False, columns: str | None = None,
             max_train_samples: int | None = None, max_length: int | None = None,
             model: str | None = None, pooling: Pooling = "auto", device: str = "auto",
             seeds: int = 5, extra_methods: tuple[ExtraMethod, ...] = (),
             eval_processes: int | None = None, promote: bool = False,
             storage: str | None = None, tracking_uri: str | None = None,
             home: str | None = None, experiment: str | None = None) -> dict:
    """Best configs -> S seeds each on the whole training split -> comparison on dev (and on
    the test file). ``eval_processes``: runs trained at once (default: one per core on a CPU,
    up to 4; 1: one after another). ``promote``: the registered version is champion even where
    it does not beat the champion."""
    config = pipeline.Config.of(locals())  # the parameters, as the pipeline's config
    refuse_secrets(storage=storage, tracking_uri=tracking_uri)
    with catch_signals():  # a signal is recorded, and goes to the flow engine's handler too
        return pipeline.evaluate(config, bitfit_study=bitfit_study, full_study=full_study,
                                 phase=orchestrate.as_task, report=orchestrate.PrefectReport())


def main(argv: list[str] | None = None) -> int:
    args = commands.parser("evaluate", __doc__).parse_args(argv)

    def work() -> dict:
        # Checked while Prefect's API starts; the passwords never reach the flow's parameters.
        config = commands.config(args)
        with orchestrate.prefect_started(config.model, config.pooling):  # the model loads too
            config = pipeline.check_evaluation(config)
        return evaluate(bitfit_study=args.bitfit_study, full_study=args.full_study,
                        **orchestrate.flow_fields(evaluate, config))

    return run_command(work, show=lambda r: print(json.dumps(r)) if args.json
                       else pipeline.print_report(r))


if __name__ == "__main__":
    exit_now(main())
