"""Annotation formats parsed into records, checked against the files written here."""
import json

import pytest

from input_pipelines import annotations


def test_kinetics_list_file(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("abseiling/a b.mp4 0\n\n# comment\nzumba/x.mp4 399\ny.mp4,7\n")
    recs = annotations.read(str(p), "list")
    assert [(r["path"], r["label"]) for r in recs] == [("abseiling/a b.mp4", 0),
                                                        ("zumba/x.mp4", 399), ("y.mp4", 7)]
    assert recs[1]["video_id"] == "x"


def test_list_file_with_bad_line_names_the_line(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("a.mp4 0\nb.mp4 dancing\n")
    with pytest.raises(annotations.AnnotationError, match=r"train.txt:2: .*'b.mp4 dancing'"):
        annotations.read(str(p), "list")


def test_official_kinetics_csv_with_class_names(tmp_path):
    p = tmp_path / "train.csv"
    p.write_text("label,youtube_id,time_start,time_end,split\n"
                 "zumba,abc,10,20,train\nabseiling,def,0,10,train\n")
    recs = annotations.read(str(p), "csv")
    assert recs[0]["path"] == "abc_000010_000020.mp4"
    assert [r["label"] for r in recs] == [1, 0]  # sorted class names: abseiling=0, zumba=1
    labels = tmp_path / "classes.txt"
    labels.write_text("zumba\nabseiling\n")
    assert [r["label"] for r in annotations.read(str(p), "csv", str(labels))] == [0, 1]


def test_ssv2_json_with_label_map(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps(
        {"Putting something onto something": "0", "Pushing something from left to right": "1"}))
    (tmp_path / "train.json").write_text(json.dumps([
        {"id": "78687", "label": "putting a cup onto a table",
         "template": "Putting [something] onto [something]", "placeholders": ["a cup", "a table"]},
        {"id": "42326", "label": "pushing a pen from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["a pen"]}]))
    recs = annotations.read(str(tmp_path / "train.json"), "ssv2", str(tmp_path / "labels.json"))
    assert [(r["path"], r["label"], r["video_id"]) for r in recs] == [
        ("78687.webm", 0, "78687"), ("42326.webm", 1, "42326")]
    assert recs[0]["captions"] == ["putting a cup onto a table"]


def test_msrvtt_json_groups_captions_per_video(tmp_path):
    p = tmp_path / "msrvtt.json"
    p.write_text(json.dumps({"videos": [{"video_id": "video0"}, {"video_id": "video1"}],
                             "sentences": [{"video_id": "video0", "caption": "a man sings"},
                                           {"video_id": "video1", "caption": "a dog runs"},
                                           {"video_id": "video0", "caption": "someone sings"}]}))
    recs = annotations.read(str(p), "captions")
    assert [(r["path"], r["captions"]) for r in recs] == [
        ("video0.mp4", ["a man sings", "someone sings"]), ("video1.mp4", ["a dog runs"])]


def test_caption_list_json_and_webvid_csv(tmp_path):
    p = tmp_path / "caps.json"
    p.write_text(json.dumps([{"video": "a.mp4", "caption": "one"},
                             {"video": "b.mp4", "caption": ["two", "three"]}]))
    assert [r["captions"] for r in annotations.read(str(p), "captions")] == [["one"],
                                                                              ["two", "three"]]
    c = tmp_path / "webvid.csv"
    c.write_text("videoid,name,page_dir\n1066,a cat on a sofa,x\n1067,waves at dusk,y\n")
    recs = annotations.read(str(c), "captions")
    assert [(r["path"], r["captions"]) for r in recs] == [("1066.mp4", ["a cat on a sofa"]),
                                                          ("1067.mp4", ["waves at dusk"])]


def test_list_file_names_with_commas_spaces_quotes_tabs_and_non_ascii(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text('my clip, take 2.mp4\t3\n'          # tab: split at the last tab
                 'a\tb c.mp4\t4\n'                   # the path itself holds a tab
                 '"my clip, take 2.mp4",5\n'         # CSV with a quoted path
                 '"say ""hi"".mp4", 6\n'             # CSV, doubled quote, space after the comma
                 'it\'s "fine".mp4 7\n'              # quotes inside a whitespace-split path
                 'vidéo 東京.mp4 8\n'                # non-ASCII and a space
                 'a,b.mp4 9\n'                       # a comma in the path, label after a space
                 'clips/x y.mp4\t-1\n', encoding="utf-8")
    recs = annotations.read(str(p), "list")
    assert [(r["path"], r["label"]) for r in recs] == [
        ("my clip, take 2.mp4", 3), ("a\tb c.mp4", 4), ("my clip, take 2.mp4", 5),
        ('say "hi".mp4', 6), ('it\'s "fine".mp4', 7), ("vidéo 東京.mp4", 8), ("a,b.mp4", 9),
        ("clips/x y.mp4", -1)]
    assert recs[5]["video_id"] == "vidéo 東京"


@pytest.mark.parametrize("line, fields", [
    ("a b\tx", "['a b', 'x']"),                        # tab rule
    ("clip, 2.mp4,3", "['clip', '2.mp4', '3']"),       # CSV rule (3 fields)
    ('"my clip, take 2.mp4",x', "['my clip, take 2.mp4', 'x']"),
    ("vidéo.mp4", "['vidéo.mp4']"),                    # whitespace rule, no label
])
def test_list_file_error_shows_the_parsed_fields(tmp_path, line, fields):
    p = tmp_path / "train.txt"
    p.write_text(f"a.mp4 0\n\nb.mp4\t1\n{line}\n", encoding="utf-8")
    with pytest.raises(annotations.AnnotationError) as e:
        annotations.read(str(p), "list")
    msg = str(e.value)
    assert msg.startswith(f"{p}:4: expected 'path<TAB>label' (or 'path label', 'path,label') "
                          f"with an integer label")
    assert f"parsed fields {fields}" in msg
    assert "separate the label with a tab" in msg


def test_csv_quoted_fields_with_commas_and_non_ascii(tmp_path):
    p = tmp_path / "train.csv"
    p.write_text('path,label,caption\n'
                 '"my clip, take 2.mp4",3,"a man, a dog"\n'
                 'vidéo 東京.mp4,4,"he said ""hi"""\n', encoding="utf-8")
    recs = annotations.read(str(p), "csv")
    assert [(r["path"], r["label"], r["captions"]) for r in recs] == [
        ("my clip, take 2.mp4", 3, ["a man, a dog"]), ("vidéo 東京.mp4", 4, ['he said "hi"'])]


def test_caption_json_with_non_ascii_names(tmp_path):
    p = tmp_path / "caps.json"
    p.write_text(json.dumps([{"video": "vidéo 東京.mp4", "caption": "un café à Tōkyō"}],
                            ensure_ascii=False), encoding="utf-8")
    recs = annotations.read(str(p), "captions")
    assert [(r["path"], r["captions"]) for r in recs] == [("vidéo 東京.mp4", ["un café à Tōkyō"])]
