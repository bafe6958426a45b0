from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bitfit.data import (DataSourceError, carve_validation, collate, encode, load_splits,
                         padding_fraction, prepare, train_batches)
from bitfit.tasks import custom_task, load_task

# Official row counts and label balance (SOURCES.md beside the data).
ROWS = {"cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3668, 408), "stsb": (5749, 1500),
        "rte": (2490, 277), "wnli": (635, 71)}


@pytest.mark.parametrize("name", list(ROWS))
def test_local_glue_folder_gives_every_official_row_with_canonical_columns(name, glue_dir):
    task, frames = load_splits(load_task(name), data_dir=glue_dir)

    assert (len(frames["train"]), len(frames["validation"])) == ROWS[name]
    for frame in frames.values():
        assert list(frame.columns) == [*task.text_columns, "label"]
        assert frame[list(task.text_columns)].map(len).min().min() > 0


def test_labels_are_class_ids_or_floats(glue_dir):
    _, cola = load_splits(load_task("cola"), data_dir=glue_dir)
    _, rte = load_splits(load_task("rte"), data_dir=glue_dir)
    _, stsb = load_splits(load_task("stsb"), data_dir=glue_dir)

    assert cola["train"]["label"].value_counts().to_dict() == {1: 6023, 0: 2528}
    assert set(rte["train"]["label"]) == {0, 1}  # entailment -> 0, not_entailment -> 1
    assert rte["train"]["label"].iloc[0] == 1  # row 0 of RTE train is not_entailment
    assert stsb["train"]["label"].dtype == np.float32
    assert stsb["train"]["label"].iloc[0] == pytest.approx(5.0)


def test_the_glue_dir_env_var_is_the_default_source(glue_dir, monkeypatch):
    monkeypatch.setenv("BITFIT_GLUE_DIR", str(glue_dir))
    _, frames = load_splits(load_task("wnli"))

    assert len(frames["validation"]) == 71


def test_a_missing_glue_folder_names_the_file_and_data_dir(tmp_path):
    with pytest.raises(DataSourceError, match=r"RTE/train\.tsv.*--data-dir"):
        load_splits(load_task("rte"), data_dir=tmp_path)


def test_an_unreachable_hub_says_to_use_data_dir(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("BITFIT_GLUE_DIR", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataSourceError, match=r"nyu-mll/glue.*Pass --data-dir DIR"):
        load_splits(load_task("rte"))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_custom_task_files_of_every_format(tmp_path, suffix):
    frame = pd.DataFrame({"text": ["good", "bad", "fine", "awful"],
                          "topic": ["pos", "neg", "pos", "neg"]})
    path = tmp_path / f"data{suffix}"
    {".csv": lambda: frame.to_csv(path, index=False),
     ".tsv": lambda: frame.to_csv(path, sep="\t", index=False),
     ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     ".json": lambda: frame.to_json(path, orient="records"),
     ".parquet": lambda: frame.to_parquet(path)}[suffix]()
    task = custom_task("mine", text_columns=("text",), label_column="topic")

    task, frames = load_splits(task, train_file=path, dev_file=path)

    assert task.label_names == ("neg", "pos")
    assert frames["train"]["label"].tolist() == [1, 0, 1, 0]


def test_custom_task_with_a_missing_column_names_it_and_the_fix(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a"], "label": [0]}).to_csv(path, index=False)
    task = custom_task("mine", text_columns=("sentence",))

    with pytest.raises(ValueError, match=r"no column 'sentence'.*text, label.*--text-columns"):
        load_splits(task, train_file=path, dev_file=path)


def test_tokenised_splits_are_cached_and_reused_without_tokenising(base, glue_dir, tmp_path):
    task, frames = load_splits(load_task("rte"), data_dir=glue_dir)
    dev = frames["validation"]
    first = encode(task, dev, base.tokenizer, max_length=64, cache_dir=tmp_path)

    class NoTokenising:  # same tokenizer fingerprint, but tokenising would fail
        backend_tokenizer = base.tokenizer.backend_tokenizer

        def __call__(self, *args, **kwargs):
            raise AssertionError("tokenised again instead of reading the cache")

    second = encode(task, dev, NoTokenising(), max_length=64, cache_dir=tmp_path)
    longer = encode(task, dev, base.tokenizer, max_length=128, cache_dir=tmp_path)

    assert np.array_equal(first.ids, second.ids) and np.array_equal(first.offsets, second.offsets)
    assert np.array_equal(first.type_ids, second.type_ids)
    assert len(list(tmp_path.glob("*.parquet"))) == 2  # another max length, another entry
    assert first.lengths.max() == 64 and longer.lengths.max() > 64


def test_carved_validation_is_seeded_stratified_and_disjoint(glue_dir):
    task, frames = load_splits(load_task("cola"), data_dir=glue_dir)
    train = frames["train"].assign(row=range(len(frames["train"])))

    kept, held = carve_validation(task, train, 0.1, seed=0)
    _, again = carve_validation(task, train, 0.1, seed=0)

    assert len(held) == 856 and len(kept) + len(held) == len(train)
    assert set(kept["row"]).isdisjoint(held["row"])
    assert held["row"].tolist() == again["row"].tolist()
    assert abs(held["label"].mean() - train["label"].mean()) < 0.002


def test_length_grouped_batches_cover_each_row_once_with_little_padding(base, glue_dir, cache_dir):
    task, frames = load_splits(load_task("cola"), data_dir=glue_dir)
    data = encode(task, frames["train"], base.tokenizer, max_length=128, cache_dir=cache_dir)
    batches = train_batches(data, 32, seed=0, epoch=0)
    plain = train_batches(data, 32, seed=0, epoch=0, group_by_length=False)

    assert sorted(np.concatenate(batches).tolist()) == list(range(len(data)))
    assert padding_fraction(data, batches) < 0.1 < padding_fraction(data, plain)
    assert [b.tolist() for b in batches] == [b.tolist() for b in
                                             train_batches(data, 32, seed=0, epoch=0)]
    assert [b.tolist() for b in batches] != [b.tolist() for b in
                                             train_batches(data, 32, seed=0, epoch=1)]


def test_collate_pads_to_the_longest_row_with_a_matching_mask(cola_small):
    data = cola_small.train
    rows = np.array([0, 1, 2])
    batch = collate(data, rows, pad_id=0)

    lengths = data.lengths[rows]
    assert batch["input_ids"].shape == (3, lengths.max())
    assert batch["attention_mask"].sum(1).tolist() == lengths.tolist()
    assert batch["input_ids"][0, : lengths[0]].tolist() == data.ids[
        data.offsets[0]: data.offsets[1]].tolist()


def test_prepare_samples_and_puts_a_carved_split_first(base, glue_dir, cache_dir):
    data = prepare(load_task("cola"), base.tokenizer, data_dir=glue_dir, max_train_samples=500,
                   max_eval_samples=100, validation_fraction=0.2, cache_dir=cache_dir)

    assert list(data.evals) == ["heldout", "validation"]
    assert (len(data.train), len(data.evals["heldout"]), len(data.evals["validation"])) == (
        400, 100, 100)
