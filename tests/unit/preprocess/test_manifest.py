from preprocess.manifest import add_stats, dumps, split_summary
from preprocess.shards import ShardInfo


def test_stats_add_integers_and_histograms_elementwise():
    a = {"rows": 2, "length_histogram": [0, 1, 1]}
    b = {"rows": 3, "length_histogram": [1, 0, 0, 4], "unk_tokens": 1}
    assert add_stats(a, b) == {"rows": 5, "length_histogram": [1, 1, 1, 4], "unk_tokens": 1}
    assert add_stats({}, a) == a and add_stats(a, {}) == a


def test_split_summary_derives_fractions_and_sorts_shards():
    shards = [ShardInfo("train/shard-00001-of-00002.arrow", 2, 20, 100, "b"),
              ShardInfo("train/shard-00000-of-00002.arrow", 2, 20, 100, "a")]
    stats = {"rows": 4, "tokens": 40, "next_sentence_random": 2, "masked_positions": 4, "mask_token": 3,
             "mask_unchanged": 1, "mask_random": 0, "unk_tokens": 0}
    s = split_summary(shards, stats)
    assert [x["path"][-20:] for x in s["shards"]] == sorted(x["path"][-20:] for x in s["shards"])
    assert s["rows"] == 4 and s["stats"]["next_sentence_random_fraction"] == 0.5
    assert s["stats"]["masked_fraction"] == round(4 / 28, 6)  # 3 special tokens per row excluded
    assert s["stats"]["mask_split"]["mask_token"] == 0.75


def test_manifest_bytes_do_not_depend_on_dict_order():
    assert dumps({"b": 1, "a": {"d": 2, "c": 3}}) == dumps({"a": {"c": 3, "d": 2}, "b": 1})
