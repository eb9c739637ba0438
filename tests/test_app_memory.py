"""The server holds its memory per request: no event leaves a new Gradio component in the
session (issue 19). Gradio builds a new copy of a component for every answer that updates it
(gr.update, or gr.skip(), which an output left out of an answer's dict becomes) and keeps the
copies of components that events read; app/ui.py gives those plain values. Memory itself is
measured by bench/soak.py (RSS); this test counts Gradio's live components."""
import gc
import uuid
from collections import Counter

import pytest

from tests.app_api import VOC_LABEL, fn_index, raw_event
from tests.conftest import CAT, IMAGENET_LABEL, write_classifier_weights

gradio_client = pytest.importorskip("gradio_client")
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")


def gradio_blocks():
    """Live Gradio components and layout blocks, by class name."""
    import gradio as gr
    gc.collect()
    return Counter(f"{type(o).__name__} {o.elem_id or ''}" for o in gc.get_objects()
                   if isinstance(o, gr.blocks.Block))


def test_events_keep_no_new_components(app, client):
    """Every /refresh (+133 KB each with 1000 classes) and every upload used to leave one
    new class box or image box in the session for good."""
    session = str(uuid.uuid4())
    chained, select = fn_index(app, "on_changes"), fn_index(app, "on_tile_select")
    controls = [0.1, 0.5, 20, 0.5, "global", []]
    cat = {"path": str(CAT), "orig_name": "cat.jpg"}

    def calls(n):
        for i in range(n):
            client.predict(gradio_client.handle_file(str(CAT)), VOC_LABEL, i / n, 0.5, 20, 0.5,
                           "global", [], None, api_name="/analyse")
            client.predict((i % 10) / 10, 0.5, 20, 0.5, "global", [], ["dog", "cat", None][i % 3],
                           api_name="/refresh")
            client.predict(5.0, 0.5, 20, 0.5, "global", [], "dog", api_name="/refresh")  # message
            raw_event(app, fn_index(app, "on_image"), [cat, VOC_LABEL, *controls, "dog"], session)
            raw_event(app, chained, [*controls, "dog"], session)
            raw_event(app, select, [*controls, "cat"], session,
                      event_data={"index": 11, "value": ["dog", "cat"][i % 2], "selected": True})
            raw_event(app, fn_index(app, "on_model"),          # a model that is not there
                      ["no such model", 20, 0.5, "global", 0.1, 0.5, [], "dog"], session)

    calls(2)        # each session's first answers replace a few components once
    before = gradio_blocks()
    calls(6)
    grown = gradio_blocks() - before
    assert not grown, f"components kept: {dict(grown)}"


def test_model_switches_keep_one_switch_of_copies_at_most(app, client):
    """A model switch must change the class lists, which Gradio does by building new copies
    of those components (1,000 names each for the ImageNet model); every switch used to
    keep its copies for the session's lifetime: 2 class boxes, the threshold and the row
    count, 4 components a switch. Now the next switch forgets the previous one's."""
    write_classifier_weights(app.classifier_weights)

    def switches(n):
        for i in range(n):
            for label in (IMAGENET_LABEL, VOC_LABEL):
                out = client.predict(label, 20, 0.5, "global", 0.1, 0.5, [], None,
                                     api_name="/choose_model")
                assert out[0] == label, out[7]          # the model shown is the one chosen

    switches(1)
    before = gradio_blocks()
    switches(5)
    grown = gradio_blocks() - before
    assert not grown, f"components kept: {dict(grown)}"


def test_forgetting_copies_needs_gradios_session_store():
    """If a Gradio release renames its session store, nothing is touched (and nothing fails)."""
    from types import SimpleNamespace

    from app.limits import forget_replaced_components
    blocks = {1: "page's", 7: "copy"}
    holder = SimpleNamespace(session_data={"s": SimpleNamespace(
        blocks_config=SimpleNamespace(blocks=blocks))})
    assert forget_replaced_components(holder, "s", {1: None}) == 1 and blocks == {1: "page's"}
    assert forget_replaced_components(holder, "other", {1: None}) == 0
    assert forget_replaced_components(SimpleNamespace(), "s", {1: None}) == 0


def test_gradio_keeps_one_event_record(app, client):
    """Gradio kept a record of each of the last 10,000 events for its monitoring page, and
    after every event built a pandas table of them all; the page keeps one."""
    for i in range(5):
        client.predict(i / 5, 0.5, 20, 0.5, "global", [], None, api_name="/refresh")
    assert len(app.demo._queue.event_analytics) <= 1
