from __future__ import annotations

import codecs

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
    with pytest.raises(DataSourceError, match=r"nyu-mll/glue.*\): pass --data-dir DIR"):
        load_splits(load_task("rte"))


def test_an_unset_or_empty_glue_dir_means_the_hub_and_a_folder_with_files_is_read(tmp_path,
                                                                                  monkeypatch):
    from bitfit.data import glue_folder

    (tmp_path / "empty").mkdir()
    (tmp_path / "full" / "RTE").mkdir(parents=True)
    monkeypatch.delenv("BITFIT_GLUE_DIR", raising=False)
    assert glue_folder() is None
    for value, expected in [("", None), (str(tmp_path / "empty"), None),
                            (str(tmp_path / "full"), tmp_path / "full"),
                            (str(tmp_path / "missing"), tmp_path / "missing")]:  # an error later
        monkeypatch.setenv("BITFIT_GLUE_DIR", value)
        assert glue_folder() == expected, value
    assert glue_folder(tmp_path / "empty") == tmp_path / "empty"  # --data-dir is what it says


def test_an_empty_glue_dir_says_it_reads_the_hub_and_an_unreachable_one_fails_in_a_sentence(
        tmp_path, monkeypatch, capsys):
    """The container stack's workers without local data: an empty folder at $BITFIT_GLUE_DIR."""
    import huggingface_hub.constants

    monkeypatch.setenv("BITFIT_GLUE_DIR", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network
    with pytest.raises(DataSourceError) as raised:
        load_splits(load_task("cola"))

    assert capsys.readouterr().err == (f"$BITFIT_GLUE_DIR {tmp_path} is an empty folder: "
                                       "reading GLUE task cola from the Hugging Face Hub "
                                       "(nyu-mll/glue)\n")
    sentence = str(raised.value)
    assert sentence.startswith("could not load GLUE task 'cola' from the Hugging Face Hub")
    assert sentence.endswith("(CoLA/train.tsv, CoLA/dev.tsv)") and "\n" not in sentence
    assert sentence.count(". ") == 0  # one sentence


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


def test_the_tokenizer_fingerprint_ignores_per_call_settings_and_sees_a_new_token(base):
    import copy

    from bitfit.data import tokenizer_fingerprint

    tokenizer = copy.deepcopy(base.tokenizer)
    first = tokenizer_fingerprint(tokenizer)
    tokenizer(["a b c d e f"], truncation=True, max_length=3, padding="max_length")
    assert tokenizer_fingerprint(tokenizer) == first  # remembered truncation is no identity
    tokenizer.add_tokens(["bitfitword"])
    assert tokenizer_fingerprint(tokenizer) != first


def test_a_damaged_cache_file_is_tokenised_again_not_an_error(base, glue_dir, tmp_path):
    task, frames = load_splits(load_task("rte"), data_dir=glue_dir)
    first = encode(task, frames["validation"], base.tokenizer, max_length=64, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("*.parquet")
    cached.write_bytes(cached.read_bytes()[:100])  # a write cut short

    again = encode(task, frames["validation"], base.tokenizer, max_length=64, cache_dir=tmp_path)

    assert np.array_equal(first.ids, again.ids) and np.array_equal(first.labels, again.labels)
    assert encode(task, frames["validation"], base.tokenizer, max_length=64,
                  cache_dir=tmp_path).ids.tolist() == first.ids.tolist()  # repaired on disk


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


def test_a_dev_splits_fingerprint_is_its_rows_whatever_reads_them(base, glue_dir, cache_dir):
    """The fingerprint the registry compares scores on: the same rows under another input
    length (or tokenizer) and in another order keep it; another sample of dev does not."""
    from bitfit.data import rows_fingerprint

    task = load_task("cola")
    long, short = (prepare(task, base.tokenizer, data_dir=glue_dir, max_train_samples=50,
                           max_length=n, cache_dir=cache_dir) for n in (128, 16))
    dev = load_splits(task, data_dir=glue_dir)[1]["validation"]
    sample = prepare(task, base.tokenizer, data_dir=glue_dir, max_train_samples=50,
                     max_eval_samples=1000, cache_dir=cache_dir)

    assert long.evals["validation"].digest() != short.evals["validation"].digest()
    assert long.fingerprints == short.fingerprints == {
        "validation": rows_fingerprint(task, dev.sample(frac=1.0, random_state=1))}
    assert sample.fingerprints["validation"] != long.fingerprints["validation"]


# --------------------------------------------------------------------------- refusing bad files

TOPIC = custom_task("mine", text_columns=("text",), label_column="topic")
RTE_HEADER = "index\tsentence1\tsentence2\tlabel"
RTE_ROWS = ["0\tA cat sat.\tA cat.\tentailment", "1\tA dog ran.\tA cat.\tnot_entailment"]


def _rows(n):
    return [f"text {i},{'pos' if i % 2 else 'neg'}" for i in range(n)]


def _csv(tmp_path, rows, name="train.csv", header="text,topic"):
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _glue(tmp_path, folder, files):
    (tmp_path / folder).mkdir()
    for name, content in files.items():
        (tmp_path / folder / name).write_text(content, encoding="utf-8")
    return tmp_path


def _refusal(error, task, **sources) -> str:
    """The message load_splits refuses with, which must be one line of our own words."""
    with pytest.raises(error) as info:
        load_splits(task, **sources)
    message = str(info.value)
    assert "\n" not in message and "Error tokenizing" not in message
    return message


def test_a_stray_quote_that_swallows_csv_rows_is_refused_at_its_line(tmp_path):
    rows = _rows(80)
    rows[10] = '"text 10 opens a quote,neg'  # line 12
    train, dev = _csv(tmp_path, rows), _csv(tmp_path, _rows(4), "d.csv")

    message = _refusal(ValueError, TOPIC, train_file=train, dev_file=dev)

    assert message.startswith(f"training file '{train}' has a quoted field that starts on line 12")
    assert "runs on to the end of the file: balance or remove the '\"' on line 12" in message


def test_a_stray_quote_closed_by_a_later_quoted_field_is_refused_at_its_line(tmp_path):
    rows = _rows(20)
    rows[3] = '"text 3 opens a quote,neg'  # line 5
    rows[8] = '"text 8, quoted",pos'  # line 10: its opening quote closes line 5's field
    train, dev = _csv(tmp_path, rows), _csv(tmp_path, _rows(4), "d.csv")

    message = _refusal(ValueError, TOPIC, train_file=train, dev_file=dev)

    assert message.startswith(f"training file '{train}' has a quoted field that starts on line 5")
    assert "to line 10, where it closes with more text after it" in message


def test_a_quoted_csv_field_may_hold_line_breaks_commas_and_quotes(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,topic\n"first line\nsecond, with a comma",pos\n'
                    '"she said ""no""",neg\nplain,pos\n', encoding="utf-8")

    _, frames = load_splits(TOPIC, train_file=path, dev_file=path)

    assert frames["train"]["text"].tolist() == ["first line\nsecond, with a comma",
                                                 'she said "no"', "plain"]
    assert frames["train"]["label"].tolist() == [1, 0, 1]  # neg, pos sorted


@pytest.mark.parametrize("suffix", [".tsv", ".txt"])
def test_quotes_in_tab_separated_files_are_read_verbatim(tmp_path, suffix):
    path = tmp_path / f"d{suffix}"
    path.write_text('text\ttopic\n"so" good\tpos\nbad "\tneg\n', encoding="utf-8")

    _, frames = load_splits(TOPIC, train_file=path, dev_file=path)

    assert frames["train"]["text"].tolist() == ['"so" good', 'bad "']


@pytest.mark.parametrize("suffix, line, found", [
    (".tsv", "a\tpos\textra", "3 tab-separated fields"),
    (".tsv", "no tab", "1 tab-separated field"),
    (".csv", "a, b,pos", "3 comma-separated fields"),
])
def test_a_line_with_the_wrong_number_of_fields_is_named(tmp_path, suffix, line, found):
    sep = "\t" if suffix == ".tsv" else ","
    path = tmp_path / f"train{suffix}"
    path.write_text(f"text{sep}topic\nok{sep}pos\n{line}\n", encoding="utf-8")

    message = _refusal(ValueError, TOPIC, train_file=path, dev_file=path)

    assert f"'{path}' line 3 has {found} but the header has 2: " in message


@pytest.mark.parametrize("bad", ["train", "dev"])
def test_an_empty_label_is_refused_with_its_file_and_line(tmp_path, bad):
    files = {s: _csv(tmp_path, _rows(4), f"{s}.csv") for s in ("train", "dev")}
    files[bad] = _csv(tmp_path, [*_rows(3), "text 3,"], f"{bad}.csv")  # line 5

    message = _refusal(ValueError, TOPIC, train_file=files["train"], dev_file=files["dev"])

    role = {"train": "training", "dev": "dev"}[bad]
    assert message.startswith(f"{role} file '{files[bad]}' has an empty label (line 5): ")


def test_an_empty_label_in_a_glue_file_is_refused_with_its_line(tmp_path):
    dev = "\n".join([RTE_HEADER, *RTE_ROWS, "2\tA.\tB.\t"]) + "\n"
    root = _glue(tmp_path, "RTE", {"train.tsv": "\n".join([RTE_HEADER, *RTE_ROWS]) + "\n",
                                   "dev.tsv": dev})

    message = _refusal(ValueError, load_task("rte"), data_dir=root)

    assert f"GLUE file '{root / 'RTE' / 'dev.tsv'}' has an empty label (line 4)" in message


@pytest.mark.parametrize("suffix, place", [(".jsonl", "line 2"), (".json", "row 2"),
                                           (".parquet", "row 2")])
def test_a_null_label_in_json_or_parquet_is_refused(tmp_path, suffix, place):
    frame = pd.DataFrame({"text": ["a", "b", "c"], "topic": ["pos", None, "neg"]})
    path = tmp_path / f"d{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=suffix == ".jsonl")

    message = _refusal(ValueError, TOPIC, train_file=path, dev_file=path)

    assert f"'{path}' has an empty label ({place})" in message


def test_a_null_text_is_refused_rather_than_read_as_the_word_none(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "topic": "pos"}\n{"text": null, "topic": "neg"}\n')

    message = _refusal(ValueError, TOPIC, train_file=path, dev_file=path)

    assert f"'{path}' has no text in column 'text' (line 2)" in message


def test_a_dev_label_missing_from_train_is_named_with_its_line(tmp_path):
    train = _csv(tmp_path, _rows(4))
    dev = _csv(tmp_path, [*_rows(5), "so so,neutral"], "d.csv")  # line 7

    message = _refusal(ValueError, TOPIC, train_file=train, dev_file=dev)

    assert message.startswith(f"dev file '{dev}' has label 'neutral' (line 7), which the "
                              f"training file '{train}' does not have (its classes: neg, pos): ")


def test_class_indices_are_read_and_an_index_out_of_range_is_named(tmp_path):
    task = custom_task("mine", text_columns=("text",), label_column="topic",
                       label_names=("neg", "pos"))
    good = _csv(tmp_path, ["a,0", "b,1"])
    bad = _csv(tmp_path, ["a,0", "b,2"], "d.csv")

    _, frames = load_splits(task, train_file=good, dev_file=good)
    message = _refusal(ValueError, task, train_file=good, dev_file=bad)

    assert frames["train"]["label"].tolist() == [0, 1]
    assert f"'{bad}' has label '2' (line 3), which is neither a class of task 'mine' " \
           f"(neg, pos) nor a class index from 0 to 1" in message


def test_a_regression_label_that_is_not_a_number_names_value_and_line(tmp_path):
    path = _csv(tmp_path, ["a,0.5", "b,high", "c,1"], header="text,score")
    task = custom_task("sts", text_columns=("text",), label_column="score", regression=True)

    message = _refusal(ValueError, task, train_file=path, dev_file=path)

    assert f"'{path}' has label 'high' (line 3), which is not a number" in message


def test_a_glue_file_without_the_official_header_names_expected_and_found_columns(tmp_path):
    root = _glue(tmp_path, "SST-2", {"train.tsv": "text\tlabel\ngood\t1\n",
                                     "dev.tsv": "sentence\tlabel\ngood\t1\n"})

    message = _refusal(ValueError, load_task("sst2"), data_dir=root)

    assert f"'{root / 'SST-2' / 'train.tsv'}' has the columns text, label but needs " \
           f"sentence, label in its header row: use the official GLUE files" in message


def test_a_glue_file_with_too_few_fields_names_the_layout_it_needs(tmp_path):
    root = _glue(tmp_path, "CoLA", {"train.tsv": "gj04\t1\n", "dev.tsv": "gj04\t1\n"})

    message = _refusal(ValueError, load_task("cola"), data_dir=root)

    assert f"'{root / 'CoLA' / 'train.tsv'}' has 2 tab-separated fields per line but needs " \
           f"at least 4 (no header row; sentence in field 4, label in field 2)" in message


@pytest.mark.parametrize("name, content, says", [
    ("train.csv", "", "is empty"),
    ("dev.csv", "text,topic\n", "has a header row but no data rows"),
    ("dev.tsv", "\n\n", "is empty"),
    ("dev.json", "[]", "holds no records"),
    ("dev.parquet", "", "is empty"),
])
def test_an_empty_file_is_refused_by_name(tmp_path, name, content, says):
    path = tmp_path / name
    path.write_text(content)
    train = path if name.startswith("train") else _csv(tmp_path, _rows(2), "t.csv")
    dev = path if name.startswith("dev") else train

    message = _refusal(DataSourceError, TOPIC, train_file=train, dev_file=dev)

    assert f"'{path}' {says}" in message


@pytest.mark.parametrize("name, header", [("train.tsv", ""), ("dev.tsv", RTE_HEADER + "\n")])
def test_an_empty_glue_file_is_refused_by_name(tmp_path, name, header):
    files = {n: "\n".join([RTE_HEADER, *RTE_ROWS]) + "\n" for n in ("train.tsv", "dev.tsv")}
    root = _glue(tmp_path, "RTE", {**files, name: header})

    message = _refusal(DataSourceError, load_task("rte"), data_dir=root)

    assert f"GLUE file '{root / 'RTE' / name}' " in message


@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8])
def test_bytes_that_are_not_utf8_are_named_by_offset_and_line(tmp_path, bom):
    path = tmp_path / "train.csv"
    path.write_bytes(bom + b"text,topic\ngood,pos\ncaf\xe9,neg\n")  # latin-1 e-acute

    message = _refusal(DataSourceError, TOPIC, train_file=path, dev_file=path)

    offset = len(bom) + 23
    assert message == (f"training file '{path}' is not valid UTF-8 (byte 0xe9 at offset "
                       f"{offset}, line 3): save it as UTF-8")


@pytest.mark.parametrize("name, content, says", [
    ("d.json", '[{"text": "a", "topic": "pos"},\n {"text": "b" "topic": "neg"}]',
     "is not valid JSON (Expecting ',' delimiter at line 2, column 15)"),
    ("d.jsonl", '{"text": "a", "topic": "pos"}\n{"text": "b", "topic": }\n',
     "line 2 is not valid JSON (Expecting value at column 24)"),
    ("d.parquet", "not parquet at all", "could not be read as Parquet"),
])
def test_malformed_json_or_parquet_is_refused_by_name(tmp_path, name, content, says):
    path = tmp_path / name
    path.write_text(content)

    message = _refusal(DataSourceError, TOPIC, train_file=path, dev_file=path)

    assert f"'{path}' {says}" in message


def test_a_json_line_that_is_not_an_object_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "topic": "pos"}\n["b", "neg"]\n')

    message = _refusal(ValueError, TOPIC, train_file=path, dev_file=path)

    assert f"'{path}' line 2 holds an array instead of an object" in message


def test_a_csv_with_a_bom_and_crlf_line_ends_reads_every_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(codecs.BOM_UTF8 + b'text,topic\r\n"a, b",pos\r\nc,neg\r\n')

    _, frames = load_splits(TOPIC, train_file=path, dev_file=path)

    assert frames["train"]["text"].tolist() == ["a, b", "c"]


class _CountingTokenizer:  # enough of a tokenizer for prepare without a model
    def __call__(self, texts, **kwargs):
        return {"input_ids": [[101, len(t), 102] for t in texts]}


def test_labels_are_checked_on_the_whole_training_file_before_subsampling(tmp_path):
    rows = _rows(60)
    rows[49] = "text 49,"  # line 51
    train, dev = _csv(tmp_path, rows), _csv(tmp_path, _rows(4), "d.csv")

    with pytest.raises(ValueError, match=r"empty label \(line 51\)"):
        prepare(TOPIC, _CountingTokenizer(), train_file=train, dev_file=dev, max_train_samples=5)


def test_classes_come_from_the_whole_training_file_not_the_sample(tmp_path):
    rows = _rows(60)
    rows[30] = "so so,neutral"
    train = _csv(tmp_path, rows)
    dev = _csv(tmp_path, [*_rows(4), "meh,neutral"], "d.csv")

    data = prepare(TOPIC, _CountingTokenizer(), train_file=train, dev_file=dev,
                   max_train_samples=5)

    assert data.task.label_names == ("neg", "neutral", "pos")
    assert 1 not in data.train.labels  # the sample missed the one neutral row


def test_the_held_out_rows_are_500_or_a_tenth_and_at_most_half():
    from bitfit.data import heldout_size

    assert heldout_size(8551) == 856  # a tenth of CoLA's training split
    assert heldout_size(8551, samples=2000) == 500  # a sample of 2,000: at least 500
    assert heldout_size(300) == 150  # a small file: never more than half of it


def test_the_final_runs_never_train_on_the_rows_a_study_held_out(base, glue_dir, cache_dir):
    from bitfit.data import HELDOUT, prepare
    from bitfit.tasks import load_task

    task = load_task("rte")
    study = prepare(task, base.tokenizer, data_dir=glue_dir, max_train_samples=300,
                    heldout_rows="auto", cache_dir=cache_dir)
    final = prepare(task, base.tokenizer, data_dir=glue_dir, heldout_rows=len(
        study.evals[HELDOUT]), heldout_split=False, cache_dir=cache_dir)
    assert len(study.evals[HELDOUT]) == 500 and len(study.train) == 300
    assert list(final.evals) == ["validation"]  # the held-out rows are not scored again

    def texts(split):
        return {tuple(split.ids[split.offsets[i]:split.offsets[i + 1]])
                for i in range(len(split))}

    held = texts(study.evals[HELDOUT])
    # none of them is trained on: RTE's training split repeats 2 pairs, which may fall on
    # both sides
    assert len(held & texts(final.train)) <= 2
    assert texts(study.train) <= texts(final.train)
    assert len(final.train) + len(held) == 2490  # RTE's training split, less the held-out rows


@pytest.mark.parametrize("header, columns", [("text,y", ("text", "y")),  # the names given
                                             ("review,label", ("text", "y")),  # other names
                                             ("review,stars", ("text", "y"))])
def test_a_header_row_under_columns_is_refused_not_trained_as_a_class(tmp_path, header, columns):
    rows = [f"text {i},{i % 2}" for i in range(30)]
    path = _csv(tmp_path, rows, header=header)
    task = custom_task("mine", text_columns=(columns[0],), label_column=columns[1],
                       columns=columns)

    message = _refusal(ValueError, task, train_file=path, dev_file=path)

    assert message == (f"training file '{path}' line 1 looks like a header row ({header}), but "
                       f"--columns says the file has none: leave --columns out to read that line "
                       f"as the header, or remove it")
    _, frames = load_splits(task, train_file=_csv(tmp_path, rows, "plain.csv", header=f"x,{1}"),
                            dev_file=path.with_name("plain.csv"))  # a first row of data is read
    assert len(frames["train"]) == 31 and frames["train"]["text"].iloc[0] == "x"
