"""Union label spaces (Kinetics-710): matching, order, maps, relabelled annotation files, the CLI,
and evaluating a union-trained classifier on one source (eval.label_subset)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from ml_collections import config_dict

from input_pipelines import annotations, label_map
from input_pipelines import label_union as lu
from internvideo_jax.evaluation import evaluate
from tests.helpers import REPO

# Tiny stand-ins for the three releases, with their naming differences: case ('Tai chi'),
# underscores and parentheses, a K400 name renamed later ('balloon blowing' -> 'inflating
# balloons', 'dying hair' -> 'dyeing hair'), classes new in K600 and in K700, other orders.
K400 = ["abseiling", "balloon blowing", "passing american football (not in game)", "Tai chi",
        "dying_hair"]
K600 = ["tai chi", "abseiling", "inflating balloons", "passing American football (not in game)",
        "cosplaying", "dyeing hair"]
K700 = ["cosplaying", "passing_American_football_(not_in_game)", "inflating balloons",
        "abseiling", "moving baby", "tai chi"]
LISTS = {"k400": K400, "k600": K600, "k700": K700}

# By hand: K400's classes in K400's order, then K600's new one, then K700's; the spelling of the
# last list holding the class.
UNION = ["abseiling", "inflating balloons", "passing_American_football_(not_in_game)", "tai chi",
         "dyeing hair", "cosplaying", "moving baby"]
TO_UNION = {"k400": [0, 1, 2, 3, 4], "k600": [3, 0, 1, 2, 5, 4], "k700": [5, 2, 1, 0, 6, 3]}
FROM_UNION = {"k400": [0, 1, 2, 3, 4, -1, -1], "k600": [1, 2, 3, 0, 5, 4, -1],
              "k700": [3, 2, 1, 5, -1, 0, 4]}


def _union():
    return lu.build_union(LISTS, lu.KINETICS_RENAMES)


def test_normalised_names_match_across_case_underscores_and_parentheses():
    key = lu.normalise("passing american football (not in game)")
    assert lu.normalise("passing_American_football_(not_in_game)") == key
    assert lu.normalise("  Passing American  football not in game ") == key
    assert lu.normalise("throwing ball") != lu.normalise(
        "throwing ball (not baseball or American football)")
    assert lu.class_key("Balloon_Blowing", lu.KINETICS_RENAMES, "k400") == "inflating balloons"


def test_union_order_spelling_and_maps_by_hand():
    u = _union()
    assert u.names == UNION
    assert u.to_union == TO_UNION
    assert u.from_union == FROM_UNION
    for s, names in LISTS.items():  # the two maps are inverse where the source has the class
        assert [u.from_union[s][j] for j in u.to_union[s]] == list(range(len(names)))
    assert u.sha256 == label_map.fingerprint(UNION)
    assert u.label_map()["sha256"] == u.sha256


def test_without_aliases_renamed_classes_stay_apart():
    u = lu.build_union(LISTS, {})
    assert len(u.names) == 9  # + 'balloon blowing', 'dying_hair' of K400 only
    assert u.names[1] == "balloon blowing" and "inflating balloons" in u.names


def test_per_source_aliases_hugging_and_opening_bottle():
    # The reference reads K400's 'hugging' as 'hugging baby' but K600's as 'hugging (not baby)'.
    u = lu.build_union({"k400": ["hugging", "opening bottle"],
                        "k600": ["hugging baby", "hugging", "opening wine bottle",
                                 "opening bottle"]}, lu.KINETICS_RENAMES)
    assert u.names == ["hugging baby", "opening wine bottle", "hugging", "opening bottle"]
    assert u.to_union == {"k400": [0, 1], "k600": [0, 2, 1, 3]}
    flat = lu.build_union({"a": ["Old name"], "b": ["x", "new_name"]}, {"old name": "new name"})
    assert flat.names == ["new_name", "x"] and flat.to_union == {"a": [0], "b": [1, 0]}


def test_two_classes_of_one_list_that_match_are_an_error():
    with pytest.raises(ValueError, match="'inflating balloons' and 'Balloon_Blowing'"):
        lu.build_union({"k600": ["inflating balloons", "Balloon_Blowing"]}, lu.KINETICS_RENAMES)
    with pytest.raises(ValueError, match="empty"):
        lu.build_union({"k400": []})


def test_a_given_order_is_adopted_and_checked():
    order = ["Moving Baby", "tai chi", "abseiling", "cosplaying", "Inflating balloons",
             "dyeing hair", "passing American football (not in game)"]
    u = lu.build_union(LISTS, lu.KINETICS_RENAMES, order=order)
    assert u.names == order
    assert u.to_union["k400"] == [2, 4, 6, 1, 5]
    assert u.to_union["k700"] == [3, 6, 4, 2, 0, 1]
    with pytest.raises(ValueError, match=r"not in any list \['skydiving'\]; missing from it "
                                         r"\['moving baby'\]"):
        lu.build_union(LISTS, lu.KINETICS_RENAMES, order=order[1:] + ["skydiving"])


def test_scores_of_one_source_are_its_columns_by_hand():
    scores = np.arange(14, dtype=np.float32).reshape(2, 7)  # (N, union)
    got = lu.subset_scores(scores, TO_UNION["k600"])
    np.testing.assert_array_equal(got, [[3, 0, 1, 2, 5, 4], [10, 7, 8, 9, 12, 11]])
    assert lu.subset_scores(scores, TO_UNION["k400"]).shape == (2, 5)


def test_relabel_a_list_file_keeps_the_rest_of_each_line(tmp_path):
    u = _union()
    src = tmp_path / "k600_train.txt"
    src.write_text("# K600 train\na/abseiling 1.mp4 0\nb 2.mp4\t3\n\"c, take 2.mp4\",4\n\n"
                   "d.mp4 -1\n")
    out = tmp_path / "out.txt"
    assert lu.relabel_file(str(src), str(out), u, "k600") == 4
    assert out.read_text() == ("# K600 train\na/abseiling 1.mp4 3\nb 2.mp4\t2\n"
                               "\"c, take 2.mp4\",5\n\nd.mp4 -1\n")
    assert [r["label"] for r in annotations.read(str(out), "list")] == [3, 2, 5, -1]
    with pytest.raises(FileExistsError, match="--overwrite"):
        lu.relabel_file(str(src), str(out), u, "k600")
    src.write_text("x.mp4 5\n")  # K600's 5, dyeing hair: union 4
    lu.relabel_file(str(src), str(out), u, "k600", overwrite=True)
    assert out.read_text() == "x.mp4 4\n"


def test_relabel_a_kinetics_csv_by_names_and_indices(tmp_path):
    u = _union()
    src = tmp_path / "k700_val.csv"
    src.write_text("label,youtube_id,time_start,time_end,split\n"
                   "passing American football (not in game),aaa,10,20,val\n"
                   "Moving_Baby,bbb,0,10,val\n"
                   "Tai Chi,ccc,5,15,val\n"
                   "0,ddd,1,11,val\n")
    out = tmp_path / "union_val.csv"
    assert lu.relabel_file(str(src), str(out), u, "k700") == 4
    lines = out.read_text().splitlines()
    assert lines[0] == "label,youtube_id,time_start,time_end,split"
    assert lines[1] == "2,aaa,10,20,val" and lines[4] == "5,ddd,1,11,val"
    records = annotations.read(str(out), "csv")
    assert [r["label"] for r in records] == [2, 6, 3, 5]
    assert records[0]["path"] == "aaa_000010_000020.mp4"


def test_relabel_lists_every_unknown_label_and_writes_nothing(tmp_path):
    u = _union()
    src = tmp_path / "k400.csv"
    src.write_text("path,label\na.mp4,abseiling\nb.mp4,juggling fire\nc.mp4,juggling fire\n"
                   "d.mp4,cosplaying\ne.mp4,9\n")
    out = tmp_path / "out.csv"
    with pytest.raises(annotations.AnnotationError) as e:
        lu.relabel_file(str(src), str(out), u, "k400")
    message = str(e.value)
    assert "3 label(s) are not classes of k400" in message
    assert "'cosplaying' (line 5)" in message  # a K600 class, not K400's
    assert "'juggling fire' (lines 3, 4)" in message and "index 9 (line 6)" in message
    assert not out.exists()
    with pytest.raises(ValueError, match="sources"):
        lu.relabel_file(str(src), str(out), u, "k710")


def test_maps_round_trip_through_json():
    u = _union()
    back = lu.LabelUnion.from_json(json.loads(json.dumps(u.to_json())))
    assert back == u
    with pytest.raises(ValueError, match="not a label union"):
        lu.LabelUnion.from_json({"format": "?"})


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "input_pipelines.label_map", *args], cwd=cwd,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO})


def test_cli_union_and_relabel_end_to_end(tmp_path):
    (tmp_path / "k400.txt").write_text("".join(n + "\n" for n in K400))
    (tmp_path / "k600.json").write_text(json.dumps({n: i for i, n in enumerate(K600)}))
    (tmp_path / "k700.txt").write_text("\n".join(K700) + "\n\n")
    labels = ",".join(str(tmp_path / f) for f in ("k400.txt", "k600.json", "k700.txt"))
    out = tmp_path / "k710"
    run = _cli("union", "--labels", labels, "--names", "k400,k600,k700", "--out", str(out),
               cwd=REPO)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert "has 7 classes, the reference's Kinetics-710 710" in run.stderr  # named k400..k700
    assert "'moving baby' (k700)" in run.stderr and "'tai chi'" not in run.stderr
    assert summary["classes"] == 7 and summary["sources"] == {"k400": 5, "k600": 6, "k700": 6}
    assert (out / "labels.txt").read_text().splitlines() == UNION
    names, _ = label_map.class_names(None, str(out / "labels.txt"))  # as data.labels
    assert label_map.fingerprint(names) == summary["sha256"]
    maps = json.loads((out / "maps.json").read_text())
    assert {s: v["to_union"] for s, v in maps["sources"].items()} == TO_UNION
    assert {s: v["from_union"] for s, v in maps["sources"].items()} == FROM_UNION
    assert (out / "source_k600.txt").read_text().splitlines() == K600

    again = _cli("union", "--labels", labels, "--names", "k400,k600,k700", "--out", str(out),
                 cwd=REPO)
    assert again.returncode == 2 and "--overwrite" in again.stderr

    (tmp_path / "train.txt").write_text("v1.mp4 4\nv2.mp4 0\n")
    run = _cli("relabel", "--map", str(out / "maps.json"), "--source", "k700", "--annotations",
               str(tmp_path / "train.txt"), "--out", str(out / "train.txt"), cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert (out / "train.txt").read_text() == "v1.mp4 6\nv2.mp4 5\n"

    (tmp_path / "bad.csv").write_text("path,label\nv.mp4,skydiving\n")
    run = _cli("relabel", "--map", str(out / "maps.json"), "--source", "k400", "--annotations",
               str(tmp_path / "bad.csv"), "--out", str(out / "bad.csv"), cwd=REPO)
    assert run.returncode == 2 and "'skydiving'" in run.stderr
    assert not (out / "bad.csv").exists()


# ---- evaluation on one source -------------------------------------------------------------------

class _FakeTask:
    """A 'classifier' whose logits are given per video (the video's first pixel is its row)."""

    def __init__(self, logits, label_map_):
        self.logits, self.num_classes, self.map = logits, logits.shape[1], label_map_

    def protocol(self):
        return {"frames": 1, "stride": 1, "sample_fps": 0, "sampler": "dense", "clips": 1,
                "crops": 1, "crop_size": 8, "normalization": "imagenet", "mean": [0.0],
                "std": [1.0], "label_map": self.map}

    def eval_views(self):
        return None

    def logits_fn(self, variables, video):
        import jax.numpy as jnp
        return jnp.asarray(variables["logits"])[video[:, 0, 0, 0, 0].astype(jnp.int32)]


def _eval_config(tmp_path, subset):
    c = config_dict.ConfigDict(dict(
        data=dict(dataset=f"list:{tmp_path}/train.txt", eval_dataset=f"csv:{tmp_path}/val.csv",
                  split="train", labels=f"{tmp_path}/k710/labels.txt", num_workers=0,
                  allow_eval_on_train=False, max_bad_videos=0, data_dir="", video_root=""),
        model=dict(num_classes=len(UNION)),
        eval=dict(split="validation", num_clips=1, num_crops=2, batch_size=2,
                  label_subset=subset)))
    return c


def test_evaluating_a_union_model_on_one_source(tmp_path, monkeypatch):
    u = _union()
    lu.write_union(u, str(tmp_path / "k710"))
    (tmp_path / "train.txt").write_text("t.mp4 0\n")
    # K400 validation by class name: read with K400's names -> K400 indices 3, 1, 0
    (tmp_path / "val.csv").write_text("path,label\na.mp4,Tai chi\nb.mp4,balloon blowing\n"
                                      "c.mp4,abseiling\n")
    logits = np.zeros((3, len(UNION)), np.float32)
    logits[0, [3, 5]] = [2.0, 9.0]  # union 5 (cosplaying, not K400) is the top: dropped -> 3
    logits[1, [0, 6]] = [1.0, 5.0]  # moving baby dropped -> abseiling (wrong: label 1)
    logits[2, 0] = 4.0
    seen = {}

    def fake_map(fn, params, mesh, config, views):
        data = evaluate.eval_data_config(config)
        from input_pipelines import builders
        source = builders.open_data_source(data)
        labels = np.asarray([source[i]["label"] for i in range(len(source))])
        video = np.zeros((3, 2, 1, 1, 1, 3), np.uint8) + np.arange(3, dtype=np.uint8)[
            :, None, None, None, None, None]
        out = np.asarray(fn(params, video))
        seen["outputs"] = out
        return {"outputs": out, "label": labels, "index": np.arange(3), "skipped": []}

    monkeypatch.setattr(evaluate, "map_over_split", fake_map)
    monkeypatch.setattr(evaluate.builders, "open_data_source",
                        _no_video_source(evaluate.builders.open_data_source))
    config = _eval_config(tmp_path, f"{tmp_path}/k710/maps.json:k400")
    task = _FakeTask(logits, u.label_map(origin="file"))
    result = evaluate.evaluate(task, {"logits": logits}, None, config)
    assert seen["outputs"].shape == (3, 2, 5)  # (videos, views, K400 classes)
    want = np.exp(lu.subset_scores(logits, u.to_union["k400"]))
    np.testing.assert_allclose(seen["outputs"][:, 0], want / want.sum(1, keepdims=True),
                               rtol=1e-6)
    assert result["top1"] == pytest.approx(2 / 3) and result["label_subset"] == "k400"

    # the model must be the union's; without the subset the 5-class split is refused
    names = list("abcdefg")
    other = _FakeTask(logits, {"names": names, "sha256": label_map.fingerprint(names),
                               "source": "x"})
    with pytest.raises(ValueError, match="label_subset's union"):
        evaluate.evaluate(other, {"logits": logits}, None, config)
    # without the subset, the K400 file is read with the union's names: refused
    with pytest.raises(ValueError, match="is not in the label map"):
        evaluate.evaluate(task, {"logits": logits}, None, _eval_config(tmp_path, ""))
    with pytest.raises(ValueError, match="MAPS.json:SOURCE"):
        evaluate.evaluate(task, {"logits": logits}, None, _eval_config(tmp_path, "k710"))


def _no_video_source(open_data_source):
    """open_data_source whose examples are the annotation records (no video files needed)."""
    def wrapped(data):
        source = open_data_source(data)
        return type("Records", (), {"__len__": lambda s: len(source.records),
                                    "__getitem__": lambda s, i: source.records[i],
                                    "records": source.records})()
    return wrapped
