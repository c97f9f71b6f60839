"""The one batched-inference loop: the same verdicts whatever the batching, for one model or many copies."""
import torch
import torch.nn.functional as F

from sweep.config import Precision
from sweep.models import create_model
from sweep.verdicts import cross_entropy, in_batches, judge


def test_verdicts_do_not_depend_on_the_batching():
    torch.manual_seed(0)
    model = create_model("test_resnet", 10, 32, (0.5,) * 3, (0.5,) * 3).eval()
    x, y = torch.rand(23, 3, 32, 32), torch.randint(0, 10, (23,))
    whole = judge(model, [(x, y)], probability=True)
    batched = judge(model, in_batches(x, y, 5), probability=True)
    with torch.no_grad():
        logits = model(x)
    assert torch.equal(whole.predicted, logits.argmax(1)) and torch.equal(whole.right, logits.argmax(1) == y)
    assert torch.allclose(whole.loss, F.cross_entropy(logits, y, reduction="none"), atol=1e-6)
    assert torch.allclose(whole.probability, logits.softmax(1)[torch.arange(23), y], atol=1e-6)
    assert torch.equal(whole.predicted, batched.predicted) and torch.allclose(whole.loss, batched.loss, atol=1e-6)


def test_copies_are_judged_each_on_their_own_images():
    """A batch of several copies' logits (copies, batch, classes) gives each copy's verdicts, as if each
    copy's logits were judged alone, bit for bit."""
    torch.manual_seed(1)
    logits, y = torch.randn(3, 11, 7) * 4, torch.randint(0, 7, (3, 11))
    together = judge(lambda chunk: chunk, [(logits[:, :6], y[:, :6]), (logits[:, 6:], y[:, 6:])])
    for copy in range(3):
        alone = judge(lambda chunk: chunk, [(logits[copy], y[copy])])
        assert torch.equal(together.predicted[copy], alone.predicted)
        assert torch.equal(together.right[copy], alone.right)
        assert torch.allclose(together.loss[copy], alone.loss, atol=1e-6)
    assert torch.equal(together.loss, F.cross_entropy(logits.transpose(1, 2), y, reduction="none"))


def test_the_loss_is_the_loops_for_the_precision():
    torch.manual_seed(2)
    logits, y = (torch.randn(4, 10) * 8).half(), torch.randint(0, 10, (4,))
    verdicts = judge(lambda x: x, [(logits, y)], Precision.fp16_scaler)
    assert torch.equal(verdicts.loss, cross_entropy(logits, y, Precision.fp16_scaler, reduction="none"))
    assert not torch.equal(verdicts.loss, F.cross_entropy(logits.float(), y, reduction="none"))


def test_nothing_to_judge_gives_empty_verdicts():
    verdicts = judge(lambda x: x, [])
    assert len(verdicts.predicted) == len(verdicts.loss) == 0 and verdicts.probability is None
