"""Text classification data (issue 5): the VADER lexicon task, its noisy variant, files, Hugging Face datasets."""

import json
import sys
import types

import numpy as np
import pytest

from tensordas.data.text import VADER_THRESHOLD, load_text_data, load_vader, split_text, vader_lexicon_path

pytest.importorskip("vaderSentiment")


def lexicon_by_hand() -> dict[str, list]:
    """text -> list of (mean, ratings) straight from the file, with nothing from tensordas."""
    out: dict[str, list] = {}
    with open(vader_lexicon_path(), encoding="utf-8") as fh:
        for line in fh:
            cols = line.rstrip("\n").split("\t")
            out.setdefault(cols[0], []).append((float(cols[1]), [int(x) for x in cols[3].strip("[]").split(",")]))
    return out


@pytest.fixture(scope="module")
def vader():
    return load_vader()


def test_vader_labels_are_the_sign_of_the_mean_rating(vader):
    raw = lexicon_by_hand()
    labels = dict(zip(vader.texts, vader.labels.tolist()))
    assert vader.label_names == ("negative", "positive")
    for word, expected in [("good", 1), ("bad", 0), (":)", 1), ("hate", 0), ("yummy", 1), ("abandon", 0)]:
        (mean, _), *_ = raw[word]
        assert (mean > 0) == bool(expected)  # the hand-read file agrees with the expectation
        assert labels[word] == expected, word
    kept = {w for w, rows in raw.items() if len(rows) == 1 and abs(rows[0][0]) >= VADER_THRESHOLD}
    assert set(vader.texts) == kept and len(vader) == len(kept) == 6789
    for word in ("lol", "d:", "ok"):  # listed twice in the file: dropped
        assert len(raw[word]) == 2 and word not in labels
    near_zero = [w for w, rows in raw.items() if len(rows) == 1 and abs(rows[0][0]) < VADER_THRESHOLD]
    assert near_zero and not set(near_zero) & set(labels)
    i = vader.texts.index("good")
    assert vader.ratings[i].tolist() == raw["good"][0][1]


def test_split_is_determined_by_the_seed(vader):
    a, b, c = split_text(vader, 3), split_text(vader, 3), split_text(vader, 4)
    assert a.train.texts == b.train.texts and a.test.texts == b.test.texts
    np.testing.assert_array_equal(a.train.labels, b.train.labels)
    assert a.train.texts != c.train.texts
    assert not set(a.train.texts) & set(a.test.texts)
    assert len(a.train) + len(a.test) == len(vader) and len(a.test) == round(0.2 * len(vader))
    small = split_text(vader, 3, train_size=50, test_size=20)
    assert small.train.texts == a.train.texts[:50] and small.test.texts == a.test.texts[:20]
    labels = dict(zip(vader.texts, vader.labels.tolist()))
    assert [labels[t] for t in a.test.texts] == a.test.labels.tolist()
    assert a.noise_rate == 0.0


def test_noisy_variant_draws_single_rater_labels_and_keeps_the_test_clean(vader):
    noisy = load_text_data("vader-noisy")
    clean_split, split = split_text(vader, 0), split_text(noisy, 0)
    assert split.train.texts == clean_split.train.texts and split.test.texts == clean_split.test.texts
    np.testing.assert_array_equal(split.test.labels, clean_split.test.labels)
    assert 0.02 < split.noise_rate < 0.06  # real rater disagreement: about 3.7%
    raw = lexicon_by_hand()
    for text, label in zip(split.train.texts, split.train.labels.tolist()):
        (_, ratings), *_ = raw[text]
        assert label in {int(r > 0) for r in ratings if r != 0}  # the sign of one non-zero rating
    # A word every rater rated on one side never flips; another seed draws other raters.
    unanimous = [i for i, t in enumerate(split.train.texts) if len({r > 0 for r in raw[t][0][1] if r != 0}) == 1]
    np.testing.assert_array_equal(split.train.labels[unanimous], split.train_clean_labels[unanimous])
    assert (split_text(noisy, 1).train.labels != split_text(noisy, 1).train_clean_labels).any()
    other = dict(zip(split_text(noisy, 1).train.texts, split_text(noisy, 1).train.labels.tolist()))
    mine = dict(zip(split.train.texts, split.train.labels.tolist()))
    assert any(other[t] != mine[t] for t in set(other) & set(mine))


def test_csv_and_jsonl_files(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("sentence,y\nnice day,pos\nawful day,neg\n,pos\nok day,neu\n")
    data = load_text_data(str(csv_path), text_column="sentence", label_column="y")
    assert data.texts == ("nice day", "awful day", "ok day")  # the row without text is dropped
    assert data.label_names == ("neg", "neu", "pos") and data.labels.tolist() == [2, 0, 1]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in [("a", 1), ("b", -1), ("c", 0)]))
    data = load_text_data(str(jsonl))
    assert data.texts == ("a", "c") and data.labels.tolist() == [1, 0]  # negative int labels: unlabelled


@pytest.mark.parametrize(
    ("spec", "kwargs", "needle"),
    [
        ("d.csv", {"label_column": "sentiment"}, "no column 'sentiment'"),
        ("d.csv", {"text_column": "body"}, "--text-column"),
        ("missing.csv", {}, "does not exist"),
        ("one.csv", {}, "single class"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, spec, kwargs, needle):
    (tmp_path / "d.csv").write_text("text,label\na,1\nb,0\n")
    (tmp_path / "one.csv").write_text("text,label\na,1\nb,1\n")
    with pytest.raises(ValueError, match=needle):
        load_text_data(str(tmp_path / spec), **kwargs)


def test_hub_dataset_without_the_datasets_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(ValueError, match="needs the 'datasets' package"):
        load_text_data("glue/sst2")


class FakeSplit:
    def __init__(self, columns: dict, names=None):
        self.columns = columns
        self.column_names = list(columns)
        self.features = {"label": types.SimpleNamespace(names=names)} if names else {}

    def __getitem__(self, column):
        return self.columns[column]


def test_hub_dataset_through_datasets_load_dataset(monkeypatch):
    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if path == "glue/sst2":
            raise FileNotFoundError("no such repo")
        return FakeSplit({"sentence": ["fine", "dull", "bad"], "label": [1, 0, -1]}, names=["negative", "positive"])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    data = load_text_data("glue/sst2", text_column="sentence")
    assert calls == [("glue/sst2", None, "train"), ("glue", "sst2", "train")]
    assert data.texts == ("fine", "dull") and data.labels.tolist() == [1, 0]
    assert data.label_names == ("negative", "positive")
    with pytest.raises(ValueError, match=r"no column 'text' \(set --text-column; columns: sentence, label\)"):
        load_text_data("glue/sst2")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json"])
def test_files_with_a_utf8_byte_order_mark(tmp_path, suffix):
    # Excel's "CSV UTF-8" (and some editors) start the file with a byte-order mark.
    rows = [("nice day", "pos"), ("awful day", "neg")]
    if suffix in (".csv", ".tsv"):
        sep = "," if suffix == ".csv" else "\t"
        body = "\n".join([f"text{sep}label", *(f"{t}{sep}{y}" for t, y in rows)])
    elif suffix == ".jsonl":
        body = "\n".join(json.dumps({"text": t, "label": y}) for t, y in rows)
    else:
        body = json.dumps([{"text": t, "label": y} for t, y in rows])
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    data = load_text_data(str(path))
    assert data.texts == ("nice day", "awful day") and data.label_names == ("neg", "pos")
