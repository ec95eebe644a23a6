"""Video QA data: the answer vocabulary, the qa and mc annotation formats (on files written here
in the releases' layouts), packing, the per-question source and the demo's questions."""
import hashlib
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from input_pipelines import (annotations, answers, build, qa, sources, synthetic_qa,
                             synthetic_videos)


# --- the answer vocabulary -------------------------------------------------------------------

def test_vocabulary_counts_normalised_answers_and_breaks_ties_by_text():
    train = ["dog", "cat", " Dog ", "cat", "bird", "two  dogs", "Two dogs", "", "zebra", "dog"]
    # normalised counts: dog 3, cat 2, two dogs 2, bird 1, zebra 1 (the empty answer not counted)
    assert answers.build_vocabulary(train, 3) == ["dog", "cat", "two dogs"]
    assert answers.build_vocabulary(train, 4) == ["dog", "cat", "two dogs", "bird"]
    assert answers.build_vocabulary(reversed(train), 4) == ["dog", "cat", "two dogs", "bird"]
    # larger than the distinct answers: all of them
    assert answers.build_vocabulary(train, 100) == ["dog", "cat", "two dogs", "bird", "zebra"]
    with pytest.raises(ValueError, match="positive"):
        answers.build_vocabulary(train, 0)


def test_normalisation_and_out_of_vocabulary_answers():
    assert answers.normalize_answer("  Two \t Dogs\n") == "two dogs"
    index = answers.vocabulary_index(["dog", "cat", "two dogs"])
    assert answers.encode(" CAT", index) == 1
    assert answers.encode("two   Dogs", index) == 2
    assert answers.encode("fish", index) == -1
    assert answers.encode("", index) == -1


def test_vocabulary_fingerprint_is_stable_and_order_sensitive():
    expected = hashlib.sha256(json.dumps(["dog", "cat"]).encode()).hexdigest()
    assert answers.fingerprint(["dog", "cat"]) == expected
    assert answers.fingerprint(("dog", "cat")) == expected
    assert answers.fingerprint(["cat", "dog"]) != expected


# --- format qa: JSON ---------------------------------------------------------------------------

def _write_json(path, items):
    path.write_text(json.dumps(items))
    return str(path)


def test_msrvtt_qa_json_groups_questions_per_video(tmp_path):
    # The original MSRVTT-QA release: integer video_id N (file videoN.mp4), integer id,
    # category_id; the All-in-one / InternVideo form names the video 'video7011'.
    path = _write_json(tmp_path / "train_qa.json", [
        {"answer": "man", "category_id": 1, "id": 0, "question": "who is singing?",
         "video_id": 7010},
        {"answer": "dog", "id": 5, "question": "what runs?", "video_id": "video7011"},
        {"answer": "sing", "category_id": 0, "id": 1, "question": "what is the man doing?",
         "video_id": 7010}])
    recs = annotations.read(path, "qa")
    assert [(r["path"], r["video_id"], r["label"], r["captions"]) for r in recs] == [
        ("video7010.mp4", "video7010", -1, []), ("video7011.mp4", "video7011", -1, [])]
    assert recs[0]["questions"] == [
        {"question": "who is singing?", "answer": "man", "question_id": "0", "type": "1", "candidates": ""},
        {"question": "what is the man doing?", "answer": "sing", "question_id": "1", "type": "0", "candidates": ""}]
    assert recs[1]["questions"] == [
        {"question": "what runs?", "answer": "dog", "question_id": "5", "type": "", "candidates": ""}]


def test_msvd_and_file_named_qa_json(tmp_path):
    path = _write_json(tmp_path / "msvd.json", [
        {"video": "vid1234", "question": "what is a man doing?", "answer": "cook"},
        {"video": "clips/x.mp4", "question": "how many dogs?", "answer": 2,
         "question_id": "q7", "answer_type": "number"},
        {"video": "vid1234", "question": "who cooks?", "answer": "man"}])
    recs = annotations.read(path, "qa")
    assert [(r["path"], r["video_id"]) for r in recs] == [("vid1234.avi", "vid1234"),
                                                          ("clips/x.mp4", "x")]
    assert [(q["question_id"], q["answer"]) for q in recs[0]["questions"]] == [
        ("vid1234#0", "cook"), ("vid1234#1", "man")]
    assert recs[1]["questions"] == [{"question": "how many dogs?", "answer": "2",
                                     "question_id": "q7", "type": "number", "candidates": ""}]


def test_qa_json_lines(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"video_id": "video1", "question": "who?", "answer": "a man"}\n\n'
                    '{"video_id": "video1", "question": "what?", "answer": "a dog"}\n')
    (rec,) = annotations.read(str(path), "qa")
    assert [q["question_id"] for q in rec["questions"]] == ["video1#0", "video1#1"]


@pytest.mark.parametrize("items, match", [
    ([{"video_id": "video1", "question": "who?", "answer": "man"},
      {"video_id": "video1", "question": "what?"}],
     r"qa.json: entry 1 \(0-based\): .*'answer'.*answer=None"),
    ([{"question": "who?", "answer": "man"}],
     r"qa.json: entry 0 \(0-based\): no video: .*'video_id', 'video' or 'gif_name'"),
    ([{"video": "a.mp4", "question": "", "answer": "man"}], r"entry 0 \(0-based\): .*question=''"),
    ({"video": "a.mp4"}, r"qa.json: expected a JSON list"),
])
def test_qa_json_errors_name_the_file_and_entry(tmp_path, items, match):
    path = _write_json(tmp_path / "qa.json", items)
    with pytest.raises(annotations.AnnotationError, match=match):
        annotations.read(path, "qa")


def test_qa_json_lines_error_names_the_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"video_id": "v", "question": "q?", "answer": "a"}\n'
                    '{"video_id": "v", "answer": "a"}\n')
    with pytest.raises(annotations.AnnotationError, match=r"qa.jsonl:2: .*question=None"):
        annotations.read(str(path), "qa")


# --- format qa: TGIF-QA FrameQA tables -----------------------------------------------------------

# The release's header and rows (dataset/Test_frameqa_question.csv: tab-separated, unquoted);
# the third row has a double quote, which a quoting reader would swallow.
TGIF_FRAMEQA = (
    "gif_name\tquestion\tanswer\ttype\tvid_id\tkey\tdescription\n"
    "tumblr_naa11tbBvx1tebyg2o1_400\thow many people are sitting next to each other and dancing ?"
    "\ttwo\t1\tFRAMEQA24076\t62578\ttwo people are sitting next to each other and dancing .\n"
    "tumblr_nh7j4ud4Mb1u5xywco1_500\twhat is the color of the shirt ?\tblack\t2\tFRAMEQA4460"
    "\t87751\ta man in a black shirt was singing and dancing .\n"
    'tumblr_naa11tbBvx1tebyg2o1_400\twhat is "it" doing ?\tdancing\t0\tFRAMEQA48373\t62578'
    "\ttwo man are dancing in bed together .\n")


def test_tgif_frameqa_table_groups_questions_per_gif(tmp_path):
    path = tmp_path / "Test_frameqa_question.csv"
    path.write_text(TGIF_FRAMEQA)
    recs = annotations.read(str(path), "qa")
    assert [(r["path"], r["video_id"]) for r in recs] == [
        ("tumblr_naa11tbBvx1tebyg2o1_400.gif", "tumblr_naa11tbBvx1tebyg2o1_400"),
        ("tumblr_nh7j4ud4Mb1u5xywco1_500.gif", "tumblr_nh7j4ud4Mb1u5xywco1_500")]
    assert recs[0]["questions"] == [
        {"question": "how many people are sitting next to each other and dancing ?",
         "answer": "two", "question_id": "FRAMEQA24076", "type": "number", "candidates": ""},
        {"question": 'what is "it" doing ?', "answer": "dancing", "question_id": "FRAMEQA48373",
         "type": "object", "candidates": ""}]
    assert recs[1]["questions"][0]["type"] == "color"


def test_comma_separated_qa_table_keeps_a_named_extension(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("gif_name,question,answer\nclip.mp4,\"what, then?\",cat\n")
    (rec,) = annotations.read(str(path), "qa")
    assert rec["path"] == "clip.mp4"
    assert rec["questions"] == [{"question": "what, then?", "answer": "cat",
                                 "question_id": "clip#0", "type": "", "candidates": ""}]


def test_qa_table_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "frameqa.tsv"
    path.write_text("gif_name\tquestion\tanswer\na\tq one ?\tcat\nb\tq two ?\t\n")
    with pytest.raises(annotations.AnnotationError, match=r"frameqa.tsv:3: .*answer=''"):
        annotations.read(str(path), "qa")
    path.write_text("gif_name\ta1\ta2\ta3\ta4\ta5\tanswer\nx\ta\tb\tc\td\te\t2\n")
    with pytest.raises(annotations.AnnotationError, match=r"without a question.*'mc'"):
        annotations.read(str(path), "qa")
    path.write_text("gif_name\tquestion\ta1\ta2\ta3\ta4\ta5\tanswer\nx\tq?\ta\tb\tc\td\te\t7\n")
    with pytest.raises(annotations.AnnotationError, match=r"tsv:2: answer index 7 is not one of"):
        annotations.read(str(path), "qa")
    path.write_text("gif_name\tquestion\ta1\ta2\ta3\ta4\ta5\tanswer\nx\tq?\ta\t\tc\td\te\t1\n")
    with pytest.raises(annotations.AnnotationError, match=r"candidates must be a list of non-emp"):
        annotations.read(str(path), "qa")


def test_tgif_action_table_gives_each_question_its_candidates(tmp_path):
    """TGIF-QA Action / Transition: a1..a5 and the right one's index (the release's columns)."""
    path = tmp_path / "Test_action_question.csv"
    path.write_text("gif_name\tquestion\ta1\ta2\ta3\ta4\ta5\tanswer\tvid_id\tkey\n"
                    "tumblr_x\twhat does the man do 3 times ?\tnod\tjump\twave\tspin\tclap\t2"
                    "\tACTION1\t7\n")
    (rec,) = annotations.read(str(path), "qa")
    assert rec["path"] == "tumblr_x.gif"
    assert rec["questions"] == [{"question": "what does the man do 3 times ?", "answer": "wave",
                                 "question_id": "ACTION1", "type": "",
                                 "candidates": "nod\njump\nwave\nspin\nclap"}]
    assert qa.candidates_of(rec["questions"][0]) == ["nod", "jump", "wave", "spin", "clap"]


def test_qa_json_candidates_by_text_and_refused_answers(tmp_path):
    path = _write_json(tmp_path / "qa.json", [
        {"video": "v.mp4", "question": "q?", "answer": "b", "options": ["a", "b"]}])
    (rec,) = annotations.read(path, "qa")
    assert rec["questions"][0]["answer"] == "b" and rec["questions"][0]["candidates"] == "a\nb"
    path = _write_json(tmp_path / "bad.json", [
        {"video": "v.mp4", "question": "q?", "answer": "c", "candidates": ["a", "b"]}])
    with pytest.raises(annotations.AnnotationError, match=r"entry 0.*answer 'c' is none of"):
        annotations.read(path, "qa")
    # a number answer of an open-ended question stays a text
    path = _write_json(tmp_path / "count.json", [
        {"video": "v.mp4", "question": "how many?", "answer": 3}])
    assert annotations.read(path, "qa")[0]["questions"][0]["answer"] == "3"


def test_questions_packed_before_candidates_read_as_open_ended():
    packed = {"questions": {"question": [b"q?"], "answer": [b"a"], "question_id": [b"1"],
                            "type": [b""]}}  # no candidates column
    assert qa.questions_of(packed) == [{"question": "q?", "answer": "a", "question_id": "1",
                                        "type": "", "candidates": ""}]
    assert qa.candidates_of(qa.questions_of(packed)[0]) == []


# --- format mc: MSR-VTT multiple choice -----------------------------------------------------------

MC_HEADER = "key\tvid_key\tvideo_id\ta1\ta2\ta3\ta4\ta5\tanswer\n"


def test_msrvtt_multiple_choice(tmp_path):
    path = tmp_path / "MSR_MC_test.csv"
    path.write_text(MC_HEADER
                    + "msr_mc_0\tmsr7010\tvideo7010\ta man sings\ta dog runs\ta car\tsea\tsky\t0\n"
                    + "msr_mc_1\tmsr7011\tvideo7011\tone\ttwo\tthree\tfour\tfive\t3\n")
    recs = annotations.read(str(path), "mc")
    assert recs == [
        {"path": "video7010.mp4", "label": -1, "video_id": "video7010", "answer_index": 0,
         "captions": ["a man sings", "a dog runs", "a car", "sea", "sky"]},
        {"path": "video7011.mp4", "label": -1, "video_id": "video7011", "answer_index": 3,
         "captions": ["one", "two", "three", "four", "five"]}]
    # Without a video_id column the video comes from vid_key (msr<n> -> video<n>), as the
    # readers of the released file do.
    path.write_text("key\tvid_key\ta1\ta2\ta3\ta4\ta5\tanswer\nk\tmsr12\ta\tb\tc\td\te\t4\n")
    (rec,) = annotations.read(str(path), "mc")
    assert (rec["path"], rec["answer_index"]) == ("video12.mp4", 4)


def test_multiple_choice_errors(tmp_path):
    path = tmp_path / "mc.tsv"
    path.write_text(MC_HEADER + "k\tmsr1\tvideo1\ta\tb\tc\td\te\t5\n")
    with pytest.raises(annotations.AnnotationError, match=r"mc.tsv:2: .*answer '5'"):
        annotations.read(str(path), "mc")
    path.write_text("vid_key\ta1\ta2\ta3\ta4\tanswer\nmsr1\ta\tb\tc\td\t0\n")
    with pytest.raises(annotations.AnnotationError, match=r"mc.tsv: .*columns.*header has"):
        annotations.read(str(path), "mc")


# --- packing -------------------------------------------------------------------------------------

def _video(i: int) -> bytes:
    rng = np.random.default_rng([5, i])
    spec = synthetic_videos.sample_scene(rng, 32, 8)
    return synthetic_videos.encode_mp4(synthetic_videos.render(spec, 32, 8, rng))


def _pack(tmp_path, fmt: str, annotation: str) -> str:
    """python -m input_pipelines.build pack --format <fmt> ...; the packed dataset's directory."""
    assert build.main(["pack", "--name", fmt, "--format", fmt, "--video-root", str(tmp_path),
                       "--split", f"train={annotation}", "--out", str(tmp_path / "tfds")]) == 0
    return str(tmp_path / "tfds" / "video_folder" / fmt / "1.0.0")


def test_pack_qa_stores_each_video_once_with_its_questions(tmp_path):
    for name in ("video1", "video2"):
        (tmp_path / f"{name}.mp4").write_bytes(_video(int(name[-1])))
    path = _write_json(tmp_path / "qa.json", [
        {"video_id": "video1", "question": "who?", "answer": "a man", "id": 10},
        {"video_id": "video2", "question": "où ?", "answer": "là"},
        {"video_id": "video1", "question": "what?", "answer": 0, "type": "what",
         "candidates": ["a dog", "no dog"]},
        {"video_id": "video3", "question": "missing?", "answer": "yes"}])  # no file: skipped
    out = _pack(tmp_path, "qa", path)
    assert (tmp_path / "tfds/video_folder/qa/1.0.0/skipped.tsv").read_text().count("\n") == 1
    source = sources.open_source(out, "train")
    assert len(source) == 2  # videos, not questions
    assert "questions" in source.dataset_info.features
    by_id = {source[i]["video_id"].decode(): source[i] for i in range(2)}
    assert qa.questions_of(by_id["video1"]) == [
        {"question": "who?", "answer": "a man", "question_id": "10", "type": "",
         "candidates": ""},
        {"question": "what?", "answer": "a dog", "question_id": "video1#1", "type": "what",
         "candidates": "a dog\nno dog"}]
    assert qa.questions_of(by_id["video2"]) == [
        {"question": "où ?", "answer": "là", "question_id": "video2#0", "type": "",
         "candidates": ""}]
    assert by_id["video1"]["video"] == _video(1)
    questions = qa.QuestionSource(source)
    assert len(questions) == 3
    assert sorted(questions[i]["question"] for i in range(3)) == ["où ?", "what?", "who?"]


def test_pack_mc_stores_candidates_and_answer_index(tmp_path):
    (tmp_path / "video3.mp4").write_bytes(_video(3))
    path = tmp_path / "MSR_MC_test.csv"
    path.write_text(MC_HEADER + "k\tmsr3\tvideo3\tone\ttwo\tthree\tfour\tfive\t2\n")
    source = sources.open_source(_pack(tmp_path, "mc", str(path)), "train")
    (ex,) = [source[0]]
    assert ex["caption"].decode().split("\n") == ["one", "two", "three", "four", "five"]
    assert int(ex["answer_index"]) == 2 and int(ex["label"]) == -1


def test_other_formats_keep_the_packed_features(tmp_path):
    builder = build.VideoFolder(splits={}, fmt="list", video_root="", labels=None, short_side=0,
                                config=tfds.core.BuilderConfig(name="x"),
                                data_dir=str(tmp_path))
    assert builder.info.features.to_json_content() == build.FEATURES.to_json_content()
    assert set(build.FEATURES) == {"video", "label", "caption", "video_id", "path", "num_frames",
                                   "fps", "duration"}


# --- the per-question source ---------------------------------------------------------------------

class _Videos:
    """3 videos with 2, 0 and 3 questions; the last in the column-wise form a packed dataset
    reads back as."""

    def __init__(self):
        self.bytes = [b"video-0", b"video-1", b"video-2"]
        self.reads = 0

    def __len__(self):
        return 3

    def __getitem__(self, i):
        self.reads += 1
        questions = [
            [{"question": "q0a", "answer": "a", "question_id": "x", "type": "t", "candidates": ""},
             {"question": "q0b", "answer": "b", "question_id": "y", "type": "", "candidates": ""}],
            [],
            {"question": [b"q2a", b"q2b", b"q2c"], "answer": [b"c", b"d", b"e"],
             "question_id": [b"v2#0", b"v2#1", b"v2#2"], "type": [b"", b"", b""]}][i]
        return {"video": self.bytes[i], "video_id": f"v{i}", "questions": questions}


def test_question_source_flattens_videos_by_hand():
    videos = _Videos()
    source = qa.QuestionSource(videos)
    assert videos.reads == 3  # each record read once to count its questions
    assert len(source) == 5
    got = [(source[i]["video_id"], source[i]["question_index"], source[i]["question"],
            source[i]["answer"]) for i in range(5)]
    assert got == [("v0", 0, "q0a", "a"), ("v0", 1, "q0b", "b"), ("v2", 0, "q2a", "c"),
                   ("v2", 1, "q2b", "d"), ("v2", 2, "q2c", "e")]
    assert source[1]["question_id"] == "y" and source[0]["type"] == "t"
    assert source[4]["video"] is videos.bytes[2]  # the record's bytes, not a copy
    assert source.describe(3) == "v2"


def test_question_source_of_a_file_list_opens_no_file_until_read(tmp_path):
    path = _write_json(tmp_path / "qa.json", [
        {"video": "a.mp4", "question": "q1?", "answer": "x"},
        {"video": "b.mp4", "question": "q2?", "answer": "y"},
        {"video": "a.mp4", "question": "q3?", "answer": "z"}])
    source = qa.QuestionSource(sources.open_source(f"qa:{path}", "train"))  # no video exists
    assert len(source) == 3
    assert source.describe(1) == str(tmp_path / "a.mp4")
    assert source.describe(2) == str(tmp_path / "b.mp4")
    with pytest.raises(FileNotFoundError):
        source[0]
    (tmp_path / "b.mp4").write_bytes(b"not checked here")
    ex = source[2]
    assert (ex["question"], ex["answer"], ex["video"]) == ("q2?", "y", b"not checked here")


# --- the demo's questions -------------------------------------------------------------------------

MOTION_ANSWERS = {"moving left": ("left", "direction"), "moving right": ("right", "direction"),
                  "moving up": ("up", "direction"), "moving down": ("down", "direction"),
                  "rotating clockwise": ("clockwise", "rotation"),
                  "rotating counterclockwise": ("counterclockwise", "rotation"),
                  "growing": ("bigger", "size"), "shrinking": ("smaller", "size")}


@pytest.mark.parametrize("label", range(len(synthetic_videos.CLASSES)))
def test_synthetic_questions_of_each_class(label):
    spec = synthetic_videos.SceneSpec(label, "pentagon", "orange", 8.0, 1.0, (0.0, 0.0), 0.0,
                                      (0, 0, 0))
    got = synthetic_qa.questions(spec.caption, "vid")
    answer, kind = MOTION_ANSWERS[synthetic_videos.CLASSES[label]]
    motion = {"direction": "which way does it move?", "rotation": "which way does it turn?",
              "size": "is it getting bigger or smaller?"}[kind]
    candidates = {"colour": "red\ngreen\nblue\nyellow\ncyan\nmagenta\nwhite\norange",
                  "shape": "circle\ntriangle\nsquare\npentagon\nhexagon",
                  "direction": "left\nright\nup\ndown", "rotation": "clockwise\ncounterclockwise",
                  "size": "bigger\nsmaller"}
    assert got == [
        {"question": "what colour is the shape?", "answer": "orange", "question_id": "vid#0",
         "type": "colour", "candidates": candidates["colour"]},
        {"question": "what shape is it?", "answer": "pentagon", "question_id": "vid#1",
         "type": "shape", "candidates": candidates["shape"]},
        {"question": motion, "answer": answer, "question_id": "vid#2", "type": kind,
         "candidates": candidates[kind]}]
    assert synthetic_qa.parse_caption(spec.caption).size == "small"


def test_a_caption_outside_the_grammar_is_refused():
    with pytest.raises(ValueError, match=r"size 'huge'.*unknown shape 'blob'.*unknown motion"):
        synthetic_qa.parse_caption("a huge red blob spins")


def test_demo_qa_source(data_dir):
    videos = sources.open_source("demo_qa/small", "train", data_dir)
    plain = sources.open_source("demo/small", "train", data_dir)
    assert len(videos) == len(plain) == 24
    ex = videos[5]
    caption = plain[5]["caption"].decode()
    assert ex["caption"] == caption and ex["label"] == int(plain[5]["label"])
    assert ex["video"] == plain[5]["video"] and ex["path"] == ex["video_id"]
    assert ex["questions"] == synthetic_qa.questions(caption, ex["video_id"])
    words = synthetic_qa.parse_caption(caption)
    assert words.motion == synthetic_videos.CLASSES[ex["label"]]
    questions = qa.QuestionSource(videos)
    assert len(questions) == 3 * 24
    q = questions[3 * 5 + 1]
    assert (q["video_id"], q["question"], q["answer"]) == (ex["video_id"], "what shape is it?",
                                                           words.shape)
    with pytest.raises(ValueError, match="Unknown demo_qa dataset config 'huge'"):
        sources.open_source("demo_qa/huge", "train", data_dir)
