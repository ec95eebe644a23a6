"""QA accuracy with out-of-vocabulary answers, the majority baseline and multiple-choice accuracy,
against values computed by hand."""
import numpy as np
import pytest

from internvideo_jax.evaluation import qa


def test_out_of_vocabulary_answers_count_as_wrong():
    # 5 questions: right, wrong, OOV (the model cannot name it: wrong even though it "predicts"
    # index -1's neighbour), right, OOV
    predicted = np.array([2, 0, 1, 3, 0])
    answers = np.array([2, 1, -1, 3, -1])
    types = ["what", "what", "who", "who", ""]
    got = qa.accuracy(predicted, answers, types)
    assert got["top1"] == pytest.approx(2 / 5)
    assert got["questions"] == 5 and got["out_of_vocabulary"] == 2
    assert got["top1_in_vocabulary"] == pytest.approx(2 / 3)  # InternVideo's count: OOV left out
    assert got["per_type"] == {"what": {"top1": 0.5, "questions": 2},
                               "who": {"top1": 0.5, "questions": 2}}
    # an OOV answer is never right, whatever index is predicted
    assert qa.accuracy(np.array([-1]), np.array([-1]), [""])["top1"] == 0.0
    with pytest.raises(ValueError, match="one of each per question"):
        qa.accuracy(np.array([1, 2]), np.array([1]), ["", ""])


def test_majority_answers_per_type_and_overall():
    answers = ["red", "blue", "red", "left", "left", "right", "blue", "blue"]
    types = ["colour", "colour", "colour", "direction", "direction", "direction", "colour",
             "colour"]
    got = qa.majority_answers(answers, types)
    # colour: red 2, blue 3 -> blue; direction: left 2, right 1 -> left; all: blue 3 of 8
    assert got == {"": "blue", "colour": "blue", "direction": "left"}
    # a tie goes to the answer seen first
    assert qa.majority_answers(["b", "a", "a", "b"], ["", "", "", ""]) == {"": "b"}


def test_multiple_choice_against_a_hand_computed_similarity_matrix():
    # video-text cosine similarities of 3 videos x 5 candidates
    scores = np.array([[0.1, 0.9, 0.3, 0.2, 0.0],    # picks 1 (right)
                       [0.5, 0.4, 0.6, 0.6, 0.1],    # a tie of 2 and 3: the first, 2 (wrong: 3)
                       [0.7, 0.2, 0.1, 0.0, 0.69]])  # picks 0 (right)
    got = qa.multiple_choice_accuracy(scores, np.array([1, 3, 0]))
    assert got["chosen"] == [1, 2, 0]
    assert got["accuracy"] == pytest.approx(2 / 3) and got["videos"] == 3


def test_multiple_choice_from_captions():
    from internvideo_jax.tasks.mm_pretrain import caption_choices
    captions = [["a red square grows"], ["a blue circle moves up", "a blue circle rises"],
                ["a red square grows"], ["a green triangle shrinks"], ["a white hexagon turns"],
                ["a cyan pentagon moves left"]]
    candidates, answer = caption_choices(captions, num_candidates=3, seed=1)
    for caps, cands, right in zip(captions, candidates, answer):
        assert len(cands) == 3 and cands[right] == caps[0]
        others = [c for k, c in enumerate(cands) if k != right]
        assert len(set(others)) == 2 and not set(others) & set(caps)
    # video 0 and 2 share a caption: neither is the other's distractor
    assert "a red square grows" not in [c for k, c in enumerate(candidates[2]) if k != answer[2]]
    again, answer_again = caption_choices(captions, num_candidates=3, seed=1)
    assert again == candidates and (answer_again == answer).all()
    with pytest.raises(ValueError, match="other distinct captions"):
        caption_choices(captions[:2], num_candidates=5)


def test_candidate_accuracy_by_hand():
    """Multiple-choice QA from an open-ended model's logits: the best candidate in the
    vocabulary wins; candidates outside it never do; open-ended questions are left out."""
    index = {"left": 0, "right": 1, "red": 2, "blue": 3}
    logits = np.array([[5.0, 1.0, 9.0, 0.0],    # q0: left vs right -> left (right answer)
                       [5.0, 1.0, 9.0, 0.0],    # q1: right vs up(OOV) -> right (wrong: up)
                       [0.0, 0.0, 1.0, 1.0],    # q2: red vs blue tie -> red, the first (right)
                       [0.0, 0.0, 0.0, 0.0],    # q3: open-ended: left out
                       [0.0, 0.0, 0.0, 0.0]])   # q4: every candidate OOV -> wrong
    candidates = [["left", "right"], ["right", "up"], ["red", "blue"], [], ["pink", "up"]]
    answers = ["left", "up", "red", "left", "up"]
    kinds = ["direction", "direction", "colour", "colour", "direction"]
    got = qa.candidate_accuracy(logits, candidates, answers, index, kinds)
    assert got["chosen"] == ["left", "right", "red", "", ""]
    assert got["mc_questions"] == 4 and got["mc_top1"] == 0.5
    assert got["per_type"] == {"colour": {"mc_top1": 1.0, "mc_questions": 1},
                               "direction": {"mc_top1": 1 / 3, "mc_questions": 3}}
    with pytest.raises(ValueError, match="one of each per question"):
        qa.candidate_accuracy(logits, candidates[:2], answers, index, kinds)
