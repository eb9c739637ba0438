"""The server holds its memory per request: no event leaves a new Gradio component in the
session (issue 19). Gradio builds a new copy of a component for every answer that updates it
(gr.update, or gr.skip(), which an output left out of an answer's dict becomes) and keeps the
copies of components that events read; app/ui.py gives those plain values. Gradio also
keeps each output's last value in the session: the scores view's is one JSON text. Memory
itself is measured by bench/soak.py (RSS); these tests count components and objects."""
import gc
import uuid
from collections import Counter

import pytest

from tests.app_api import ANALYSE_INPUTS, VOC_LABEL, file_value, fn_index, raw_event, scores_of
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


def objects_in(value):
    """The Python objects reachable from value through dicts, lists, tuples and sets."""
    seen, stack = set(), [value]
    while stack:
        o = stack.pop()
        if id(o) not in seen:
            seen.add(id(o))
            stack += ([*o.keys(), *o.values()] if isinstance(o, dict)
                      else list(o) if isinstance(o, (list, tuple, set)) else [])
    return len(seen)


# the session never switched models, so its class box lists VOC's classes when the answer
# names an ImageNet class (a client calling /analyse with another model): Gradio warns
@pytest.mark.filterwarnings("ignore:The value passed into gr.Dropdown:UserWarning")
def test_what_a_session_keeps_does_not_grow_with_the_classes(app):
    """Gradio keeps in each session the last value of every output. The scores view's was
    a dict whose rows for 1000 classes made some 8,000 small Python objects a session; when
    the session was forgotten they left the allocator's arenas pinned (200 idle sessions gave
    back 75-79 % of their memory). It is one JSON text now, whatever the number of classes."""
    write_classifier_weights(app.classifier_weights)
    kept = {}
    for label, classes in ((VOC_LABEL, 20), (IMAGENET_LABEL, 1000)):
        session = str(uuid.uuid4())
        out = raw_event(app, fn_index(app, api_name="analyse"),
                        [file_value(CAT), label, *ANALYSE_INPUTS[1:]], session)
        assert len(scores_of(out)["rows"]) == classes, out[0]
        kept[label] = objects_in(app.demo.state_holder.session_data[session].config_values)
    assert kept[IMAGENET_LABEL] < kept[VOC_LABEL] + 100, kept


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
