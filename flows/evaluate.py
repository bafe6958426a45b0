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

from prefect import flow  # noqa: E402

from bitfit import pipeline  # noqa: E402
from bitfit.commands import evaluate_arguments, evaluate_request  # noqa: E402
from prepare import as_task  # noqa: E402


@flow(name="bitfit-evaluate")
def evaluate(task: str = "cola", bitfit_study: str = "cola-bitfit", full_study: str | None = None,
             storage: str | None = None, seeds: int = 5, extra_methods: tuple[str, ...] = (),
             model: str | None = None, data_dir: str | None = None,
             max_train_samples: int | None = None, max_length: int = 128,
             tracking_uri: str | None = None, home: str | None = None,
             processes: int | None = None, train_file: str | None = None,
             dev_file: str | None = None, text_columns: str = "sentence",
             label_column: str = "label", regression: bool = False,
             columns: str | None = None, device: str = "auto") -> dict:
    """Best configs -> S seeds each on the whole training split -> comparison on dev.

    ``processes``: runs trained at once (default: one per core on a CPU, up to 4; 1: one after
    another)."""
    from bitfit.services import refuse_secrets

    refuse_secrets(storage=storage, tracking_uri=tracking_uri)
    return pipeline.evaluate(task=task, bitfit_study=bitfit_study, full_study=full_study,
                             storage=storage, seeds=seeds, extra_methods=tuple(extra_methods),
                             model=model, data_dir=data_dir,
                             max_train_samples=max_train_samples, max_length=max_length,
                             tracking_uri=tracking_uri, home=home, processes=processes,
                             train_file=train_file, dev_file=dev_file,
                             text_columns=text_columns, label_column=label_column,
                             regression=regression, columns=columns, device=device,
                             phase=as_task)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    evaluate_arguments(parser)
    args = parser.parse_args(argv)
    request = evaluate_request(args)

    def work() -> dict:
        from bitfit.services import check_prefect_api

        # Checked before Prefect starts; the passwords never reach the flow's parameters.
        storage, tracking_uri = pipeline.check_evaluation(
            **{k: request[k] for k in ("task", "seeds", "processes", "max_train_samples",
                                       "extra_methods", "storage", "tracking_uri", "home")},
            own=pipeline.OwnData.from_request(request))
        check_prefect_api()
        return evaluate(**{**request, "storage": storage, "tracking_uri": tracking_uri})

    return run_command(work, show=lambda r: print(json.dumps(r)) if args.json
                       else pipeline.print_report(r))


if __name__ == "__main__":
    sys.exit(main())
