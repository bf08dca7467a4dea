"""The object_detector, image_segmenter and text_classifier built-ins, in archives from the real
torch-model-archiver that name them the way TorchServe users do (``--handler object_detector``)."""

from __future__ import annotations

import io
import json
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.e2e.test_peer_archives import archiver
from tests.support import FIXTURES, running_server

torch = pytest.importorskip("torch", reason="the [torch] extra (torch==2.13.0) is not installed")

VOCABULARY = {"<unk>": 0, "good": 1, "bad": 2, "great": 3, "awful": 4, "movie": 5}
SENTIMENT = {"good": [0.0, 2.0], "great": [0.0, 3.0], "bad": [2.0, 0.0], "awful": [3.0, 0.0]}


def png(width: int, height: int, bright: tuple[int, int, int, int]) -> bytes:
    """A black picture with one white rectangle (left, top, right, bottom)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    left, top, right, bottom = bright
    pixels[top:bottom, left:right] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    sys.path.insert(0, str(FIXTURES))
    from toy_detector import ToyDetector
    from toy_segmenter import ToySegmenter
    from toy_text import ToySentiment

    work = tmp_path_factory.mktemp("builtin-handlers")
    store = work / "store"
    store.mkdir()
    for name in ("toy_detector.py", "toy_segmenter.py", "toy_text.py"):
        shutil.copy(FIXTURES / name, work / name)
    text = ToySentiment()
    with torch.no_grad():
        text.bag.weight.zero_()
        for token, weights in SENTIMENT.items():
            text.bag.weight[VOCABULARY[token]] = torch.tensor(weights)
    torch.save(ToyDetector().state_dict(), work / "detector.pth")
    torch.save(ToySegmenter().state_dict(), work / "segmenter.pth")
    torch.save(text.state_dict(), work / "text.pth")
    (work / "boxes" / "index_to_name.json").parent.mkdir()
    (work / "boxes" / "index_to_name.json").write_text(json.dumps({"1": "square", "2": "speck"}))
    (work / "index_to_name.json").write_text(json.dumps({"0": "negative", "1": "positive"}))
    (work / "vocab.json").write_text(json.dumps(VOCABULARY))
    (work / "model-config.yaml").write_text("batchSize: 4\nmaxBatchDelay: 100\nminWorkers: 1\n")
    common = ["--version", "1.0", "--export-path", str(store), "--config-file", "model-config.yaml"]
    for name, model_file, weights, handler, extra in (
        ("detector", "toy_detector.py", "detector.pth", "object_detector", "boxes/index_to_name.json"),
        ("segmenter", "toy_segmenter.py", "segmenter.pth", "image_segmenter", None),
        ("sentiment", "toy_text.py", "text.pth", "text_classifier", "index_to_name.json,vocab.json"),
    ):
        extras = ["--extra-files", extra] if extra else []
        archiver(
            "torch-model-archiver",
            *("--model-name", name, "--model-file", model_file, "--serialized-file", weights),
            *("--handler", handler, *extras, *common),
            cwd=work,
        )
    models = ["detector=detector.mar", "segmenter=segmenter.mar", "sentiment=sentiment.mar"]
    with running_server(work, ["--model-store", str(store), "--models", *models]) as running:
        yield running


def concurrently(server, model: str, bodies: list[bytes]) -> list:
    """Send the bodies at once, so that the batcher groups them; answers in the bodies' order."""
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: server.predict(model, body), bodies))


def test_object_detector_answers_labelled_boxes_above_the_threshold(server):
    bodies = [png(64, 48, (10, 5, 30, 20)), png(40, 90, (0, 30, 40, 31))]
    first, second = concurrently(server, "detector", bodies)
    assert first.status_code == 200, first.text
    assert first.json() == [{"square": [10.0, 5.0, 30.0, 20.0], "score": pytest.approx(0.9)}]
    assert second.json() == [{"square": [0.0, 30.0, 40.0, 31.0], "score": pytest.approx(0.9)}]


def test_image_segmenter_answers_a_class_and_probability_per_pixel(server):
    bodies = [png(8, 6, (2, 1, 5, 4)), png(5, 5, (0, 0, 5, 1)), png(8, 6, (0, 0, 1, 1))]
    answers = concurrently(server, "segmenter", bodies)
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.status_code == 200, answer.text
        grid = np.array(answer.json())
        pixels = np.asarray(Image.open(io.BytesIO(body)))[:, :, 0] > 0
        assert grid.shape == (*pixels.shape, 2)
        np.testing.assert_array_equal(grid[:, :, 0], pixels.astype(float))
        assert (grid[:, :, 1] > 0.5).all() and (grid[:, :, 1] <= 1.0).all()


def test_text_classifier_tokenises_looks_up_and_labels(server):
    texts = ["A GOOD movie, a <b>great</b> one!", "awful. Just bad.", "nothing known here"]
    answers = concurrently(server, "sentiment", [t.encode() for t in texts])
    for text, answer in zip(texts, answers, strict=True):
        assert answer.status_code == 200, answer.text
        logits = np.zeros(2)
        for token in text.lower().replace("<b>", " ").replace("</b>", " ").replace(".", " ").split():
            logits += SENTIMENT.get(token.strip(",!"), [0.0, 0.0])
        expected = np.exp(logits) / np.exp(logits).sum()
        got = answer.json()
        assert list(got) == sorted(["negative", "positive"], key=lambda label: -got[label])
        assert got["negative"] == pytest.approx(expected[0], abs=1e-5)
        assert got["positive"] == pytest.approx(expected[1], abs=1e-5)
    assert server.predict("sentiment", {"text": "great"}).json()["positive"] > 0.9


@pytest.mark.parametrize(
    ("model", "body", "names"),
    [
        ("detector", b"not an image", "not an image"),
        ("segmenter", b"\x89PNG broken", "image"),
        ("sentiment", b"\xff\xfe\xfa", "UTF-8"),
    ],
)
def test_bad_input_is_a_400_that_says_why_and_the_model_keeps_serving(server, model, body, names):
    answer = server.predict(model, body)
    assert answer.status_code == 400, answer.text
    assert names in answer.json()["message"]
    good = png(16, 16, (2, 2, 8, 8)) if model != "sentiment" else b"good"
    assert server.predict(model, good).status_code == 200
