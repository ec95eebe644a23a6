"""Localization ground truth (internvideo_jax/localization/annotations.py): ActivityNet JSON read
and write with its checks, THUMOS-14 conversion from tiny class files, durations from a CSV or
probed from videos, and the convert-thumos command end to end."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from input_pipelines.synthetic_videos import encode_mp4
from internvideo_jax.localization.activitynet import FormatError, evaluate_detection
from internvideo_jax.localization.annotations import (convert_thumos, read_activitynet,
                                                      read_durations, read_thumos,
                                                      write_activitynet)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V51, V52, V53 = "video_validation_0000051", "video_validation_0000052", "video_validation_0000053"


@pytest.fixture
def thumos(tmp_path):
    """A THUMOS-14 annotation directory: two validation classes (one with '_' in its name), an
    Ambiguous file, a test-subset file and an unrelated file; and a durations CSV."""
    d = tmp_path / "annotation"
    d.mkdir()
    (d / "BaseballPitch_val.txt").write_text(f"{V51} 67.5 75.9\n{V52}  1.0\t2.5 \n\n")
    (d / "Cliff_Diving_val.txt").write_text(f"{V51} 10.0 12.0\r\n")
    (d / "Ambiguous_val.txt").write_text(f"{V51} 80.0 81.5\n{V53} 3.0 4.0\n")
    (d / "BaseballPitch_test.txt").write_text("video_test_0000001 1.0 2.0\n")
    (d / "README.txt").write_text("not an annotation file\n")
    csv = tmp_path / "durations.csv"
    csv.write_text(f"video_id,duration,fps\n{V51},180.5,30\n{V52},60.0,\n{V53},20.0,25\n")
    return d, csv


def test_thumos_class_files_become_activitynet_ground_truth(thumos):
    d, csv = thumos
    database = convert_thumos(str(d), "validation", durations=read_durations(str(csv)), fps=29.97)
    assert database == {
        V51: {"subset": "validation", "duration": 180.5, "fps": 30.0,
              "annotations": [{"segment": [67.5, 75.9], "label": "BaseballPitch"},
                              {"segment": [10.0, 12.0], "label": "Cliff_Diving"}],
              "ambiguous": [[80.0, 81.5]]},
        # no fps in the CSV: the one given for all
        V52: {"subset": "validation", "duration": 60.0, "fps": 29.97,
              "annotations": [{"segment": [1.0, 2.5], "label": "BaseballPitch"}]},
        # only ambiguous segments: a video of the subset without annotations
        V53: {"subset": "validation", "duration": 20.0, "fps": 25.0, "annotations": [],
              "ambiguous": [[3.0, 4.0]]},
    }


def test_the_test_subset_reads_only_test_files(thumos):
    d, _ = thumos
    actions, ambiguous = read_thumos(str(d), "test")
    assert actions == {"video_test_0000001": [{"segment": [1.0, 2.0],
                                               "label": "BaseballPitch"}]}
    assert ambiguous == {}


def test_ambiguous_segments_are_not_ground_truth(thumos, tmp_path):
    # A prediction exactly on the ambiguous segment of V51 is a false positive of its class.
    d, csv = thumos
    path = str(tmp_path / "gt.json")
    write_activitynet(convert_thumos(str(d), "validation", durations=read_durations(str(csv))),
                      path)
    r = evaluate_detection(read_activitynet(path),
                           {"results": {V51: [{"segment": [80.0, 81.5], "label": "BaseballPitch",
                                               "score": 0.9}]}}, "validation", [0.5])
    assert r["per_class"]["BaseballPitch"]["0.50"] == 0.0
    assert r["ground_truth"] == {"videos": 3, "instances": 3, "classes": 2}


def test_missing_durations_are_listed(thumos, tmp_path):
    d, _ = thumos
    csv = tmp_path / "partial.csv"
    csv.write_text(f"video_id,duration\n{V52},60\n")
    with pytest.raises(FormatError, match=f"no duration for 2 annotated videos: {V51}, {V53}"):
        convert_thumos(str(d), "validation", durations=read_durations(str(csv)))


def test_exclude_leaves_out_only_annotated_videos_it_names(thumos):
    d, csv = thumos
    durations = read_durations(str(csv))
    database = convert_thumos(str(d), "validation", durations=durations, exclude=[V52])
    assert sorted(database) == [V51, V53]
    with pytest.raises(FormatError, match="video_validation_0009999 not annotated"):
        convert_thumos(str(d), "validation", durations=durations,
                       exclude=["video_validation_0009999"])


def test_bad_thumos_files_name_the_file_and_line(tmp_path):
    d = tmp_path / "annotation"
    d.mkdir()
    with pytest.raises(FormatError, match="no THUMOS-14 validation annotation file"):
        read_thumos(str(d), "validation")
    (d / "Diving_val.txt").write_text(f"{V51} 1.0 2.0\n{V51} 5.0\n")
    with pytest.raises(FormatError, match="Diving_val.txt:2: expected 'video_id start end'"):
        read_thumos(str(d), "validation")
    (d / "Diving_val.txt").write_text(f"{V51} 5.0 2.0\n")
    with pytest.raises(FormatError, match="Diving_val.txt:1: segment of .* ends"):
        read_thumos(str(d), "validation")
    with pytest.raises(FormatError, match="cannot list"):
        read_thumos(str(tmp_path / "absent"), "validation")


def test_durations_csv_errors_name_the_line(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("video,length\nv1,3\n")
    with pytest.raises(FormatError, match="header 'video_id,duration'"):
        read_durations(str(csv))
    csv.write_text("video_id,duration\nv1,3\n\nv1,4\n")
    with pytest.raises(FormatError, match="d.csv:4: video v1 is listed twice"):
        read_durations(str(csv))
    csv.write_text("video_id,duration,fps\nv1,long,30\n")
    with pytest.raises(FormatError, match="d.csv:2: expected a video id, a duration"):
        read_durations(str(csv))


def test_durations_and_fps_probed_from_the_videos(thumos, tmp_path):
    d, _ = thumos
    videos = tmp_path / "videos"
    videos.mkdir()
    clip = encode_mp4(np.zeros((10, 16, 16, 3), np.uint8), fps=10)  # 10 frames at 10 fps: 1 s
    for vid in (V51, V52):
        (videos / f"{vid}.mp4").write_bytes(clip)
    with pytest.raises(FormatError, match=f"no video file <video_id>.<ext> for 1 annotated "
                                          f"videos: {V53}"):
        convert_thumos(str(d), "validation", video_dir=str(videos))
    database = convert_thumos(str(d), "validation", video_dir=str(videos), exclude=[V53])
    assert {vid: (v["duration"], v["fps"]) for vid, v in database.items()} == {
        V51: (1.0, 10.0), V52: (1.0, 10.0)}


def test_activitynet_files_are_checked_on_read_and_write(tmp_path):
    path = str(tmp_path / "gt.json")
    database = {"v1": {"subset": "validation", "duration": 30.0,
                       "annotations": [{"segment": [1, 2], "label": "A"}]}}
    write_activitynet(database, path, version="test")
    data = read_activitynet(path)
    assert data == {"version": "test", "taxonomy": [], "database": database}
    assert os.listdir(tmp_path) == ["gt.json"]
    with pytest.raises(FormatError, match="video 'v2': needs a 'duration'"):
        write_activitynet({"v2": {"subset": "test", "annotations": []}}, path)
    with pytest.raises(FormatError, match="video 'v3' annotation 0: segment .* ends before"):
        write_activitynet({"v3": {"subset": "test", "duration": 9,
                                  "annotations": [{"segment": [4, 3], "label": "A"}]}}, path)
    (tmp_path / "bad.json").write_text(json.dumps({"database": {"v4": {"duration": 3,
                                                                       "annotations": []}}}))
    with pytest.raises(FormatError, match="bad.json: video 'v4': needs a 'subset'"):
        read_activitynet(str(tmp_path / "bad.json"))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "internvideo_jax.localization", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_convert_thumos_command_then_score(thumos, tmp_path):
    d, csv = thumos
    out = tmp_path / "thumos_val.json"
    p = run_cli("convert-thumos", "--annotations", str(d), "--subset", "validation",
                "--durations", str(csv), "--exclude", V53, "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "2 videos" in p.stdout and "3 segments of 2 classes" in p.stdout
    assert sorted(json.loads(out.read_text())["database"]) == [V51, V52]
    # every segment predicted exactly: mAP 1
    results = {"results": {vid: [dict(a, score=0.5) for a in v["annotations"]]
                           for vid, v in json.loads(out.read_text())["database"].items()}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    p = run_cli("score", "--ground-truth", str(out), "--predictions",
                str(tmp_path / "results.json"), "--tiou", "0.5,0.7")
    assert p.returncode == 0, p.stderr
    assert "average  100.00" in p.stdout
    # the test subset added to the same file: one ground truth for training and evaluation
    with open(csv, "a") as f:
        f.write("video_test_0000001,30.0,30\n")
    p = run_cli("convert-thumos", "--annotations", str(d), "--subset", "test", "--durations",
                str(csv), "--out", str(out), "--append")
    assert p.returncode == 0, p.stderr
    database = json.loads(out.read_text())["database"]
    assert {v: e["subset"] for v, e in database.items()} == {
        V51: "validation", V52: "validation", "video_test_0000001": "test"}
    p = run_cli("convert-thumos", "--annotations", str(d), "--subset", "test", "--durations",
                str(csv), "--out", str(out), "--append")
    assert p.returncode == 2 and "already holds 1 of these videos" in p.stderr
    p = run_cli("convert-thumos", "--annotations", str(tmp_path / "absent"), "--subset", "test",
                "--durations", str(csv), "--out", str(out))
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr
