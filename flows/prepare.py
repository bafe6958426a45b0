"""Data preparation flow: load a task's splits and tokenise them into the run home's cache.

    python flows/prepare.py --task cola --data-dir ../shared/data/glue

The cache is keyed by its inputs (data, tokenizer, max length), so a second run, or the search
flow after this one, reads the tokenised splits back instead of tokenising again.
"""

from __future__ import annotations

import json

from bitfit.entry import exit_now, run_command
from bitfit.interrupts import catch_signals
from bitfit.settings import quiet_environment


if __name__ == "__main__":  # --help and a mistake in the flags are answered before Prefect loads
    from bitfit.commands import parser

    parser("prepare", __doc__).parse_args()

quiet_environment()  # before Prefect reads its settings

from prefect import flow  # noqa: E402

from bitfit import commands, orchestrate, pipeline  # noqa: E402
from bitfit.pipeline import Pooling  # noqa: E402


@flow(name="bitfit-prepare", flow_run_name="{task}-prepare")
def prepare(task: str = "cola", data_dir: str | None = None, train_file: str | None = None,
            dev_file: str | None = None, test_file: str | None = None,
            text_columns: str = "sentence", label_column: str = "label",
            regression: bool = False, columns: str | None = None,
            max_train_samples: int | None = None, max_length: int | None = None,
            model: str | None = None, pooling: Pooling = "auto", home: str | None = None,
            validation_fraction: float | None = pipeline.HELDOUT_FRACTION) -> dict:
    """Prepare a task's data for a search; returns the split sizes."""
    config = pipeline.Config.of(locals())  # the parameters, as the pipeline's config
    with catch_signals():  # a signal is recorded, and goes to the flow engine's handler too
        return pipeline.prepare(config, validation_fraction=validation_fraction,
                                phase=orchestrate.as_task)


def main(argv: list[str] | None = None) -> int:
    args = commands.parser("prepare", __doc__).parse_args(argv)

    def work() -> dict:
        config = commands.config(args)
        with orchestrate.prefect_started(config.model, config.pooling):  # the model loads too
            fields = orchestrate.flow_fields(prepare, config)
        return prepare(**fields)

    return run_command(work, show=lambda r: print(json.dumps(r)))


if __name__ == "__main__":
    exit_now(main())
