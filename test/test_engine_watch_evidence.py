"""Yes/no conditions scored from the first-token logits, and the evidence frames an answer drew on."""

import pytest
import torch
from engine_helpers import assert_same_memory, memory_snapshot, random_frames, stream_of
from torch import nn

from livevlm_ros.engine import EngineConfig, InvalidQuestionError, LiveVLMStream, load_video_llm
from livevlm_ros.engine.config import MEMORY_POLICIES


class _BiasedHead(nn.Module):
    """The model's LM head plus a fixed bias on some tokens."""

    def __init__(self, head: nn.Module, bias: torch.Tensor) -> None:
        super().__init__()
        self.head, self.bias = head, bias

    def forward(self, hidden):
        return self.head(hidden) + self.bias


@pytest.mark.parametrize("name", ["tiny-llava-onevision", "tiny-smolvlm"])
@pytest.mark.parametrize("winner", ["yes", "no"])
def test_p_yes_comes_from_the_first_token_logits(name, winner):
    model = load_video_llm(name)  # a private copy: its head is changed below
    stream = LiveVLMStream(model, EngineConfig(memory="vsb", budget_tokens=96, clip_frames=4))
    for i, frame in enumerate(random_frames(12, seed=1)):
        stream.ingest(frame, 0.5 * i)
    yes_ids, no_ids = stream._yes_no_ids()
    assert yes_ids and no_ids and not set(yes_ids) & set(no_ids)
    bias = torch.zeros(model.lm_head.out_features if hasattr(model.lm_head, "out_features")
                       else model.lm_head.weight.shape[0])
    bias[yes_ids if winner == "yes" else no_ids] = 30.0
    model.lm_head = _BiasedHead(model.lm_head, bias)
    stream.flush()
    before = memory_snapshot(stream)
    result = stream.evaluate_condition("Is a car in view?", evidence=2)
    assert_same_memory(before, memory_snapshot(stream))
    assert (result.p_yes > 0.99) if winner == "yes" else (result.p_yes < 0.01)
    logits = stream.first_token_logits("Is a car in view?" + stream.CONDITION_SUFFIX)
    expected = torch.stack([logits[yes_ids].logsumexp(0), logits[no_ids].logsumexp(0)]).softmax(0)[0]
    assert result.p_yes == pytest.approx(float(expected), abs=1e-6)
    assert len(result.evidence) == 2 and result.span_start <= result.evidence[0].time <= result.span_end


def test_condition_input_is_validated():
    stream = stream_of("tiny-smolvlm", random_frames(6, seed=2), clip_frames=3)
    with pytest.raises(InvalidQuestionError):
        stream.evaluate_condition("   ")
    with pytest.raises(InvalidQuestionError):
        stream.evaluate_condition("x" * 5000)


@pytest.mark.parametrize("policy", MEMORY_POLICIES)
def test_evidence_frames_lie_inside_the_span_for_every_policy(policy):
    stream = stream_of("tiny-smolvlm", random_frames(30, seed=3), memory=policy, budget_tokens=120, clip_frames=4,
                       rekv_frames=2)
    result = stream.ask("what moved?", max_new_tokens=2, evidence=3)
    assert 1 <= len(result.evidence) <= 3
    masses = [e.mass for e in result.evidence]
    assert masses == sorted(masses, reverse=True) and 0 < sum(masses) <= 1.0 + 1e-6
    for item in result.evidence:
        assert result.span_start <= item.time <= result.span_end
        assert item.time == pytest.approx(0.5 * item.frame)
    windowed = stream.ask("and then?", max_new_tokens=1, evidence=2, since=10.0)
    assert all(e.time >= 10.0 for e in windowed.evidence)
    assert stream.ask("no evidence?", max_new_tokens=1).evidence == []
