"""Raw requests to a running page (tests/conftest.py start_app), written as any HTTP client
could send them, without gradio_client: the tests of what the server accepts use these."""
import json
from pathlib import Path

import httpx

VOC_LABEL = "VOC model (20 classes)"
# /analyse after its image: model, lam, threshold, top_k, alpha, scale, picked, focus
ANALYSE_INPUTS = [VOC_LABEL, 0.1, 0.5, 20, 0.5, "global", [], None]


def fn_index(app, fn=None, api_name=None):
    """The index of the event whose handler is named fn, or whose API name is api_name
    (the private events have none)."""
    return next(i for i, f in app.demo.fns.items()
                if (fn is not None and getattr(f.fn, "__name__", None) == fn)
                or (api_name is not None and f.api_name == api_name))


def queue_event(app, index, data, session, event_data=None):
    """queue/join for event `index` in this session, the body written by json.dumps as-is
    (NaN included); (success, the output list or Gradio's error text)."""
    body = {"data": data, "fn_index": index, "session_hash": session}
    if event_data is not None:
        body["event_data"] = event_data
    httpx.post(app.url + "gradio_api/queue/join", timeout=60, content=json.dumps(body),
               headers={"content-type": "application/json"}).raise_for_status()
    with httpx.stream("GET", app.url + f"gradio_api/queue/data?session_hash={session}",
                      timeout=120) as events:
        for line in events.iter_lines():
            message = json.loads(line[5:]) if line.startswith("data:") else {}
            if message.get("msg") == "process_completed":
                output = message["output"]
                return message["success"], (output["data"] if message["success"]
                                            else output["error"])
    raise AssertionError("the event stream ended without a result")


def raw_event(app, index, data, session, event_data=None):
    """queue_event's output list; an AssertionError if the event failed."""
    success, output = queue_event(app, index, data, session, event_data)
    assert success, output
    return output


def raw_analyse(app, value, session):
    """The analysis event (/analyse) with this image value and the default controls; its
    output list, or Gradio's own error text where Gradio refused the value first."""
    return queue_event(app, fn_index(app, api_name="analyse"), [value, *ANALYSE_INPUTS],
                       session)[1]


def raw_analyse_file(app, data, session):
    """The page's own upload call (the scores view's server function), as a raw request."""
    upload_view = next(b for b in app.demo.blocks.values()
                       if getattr(b, "elem_id", None) == "csra-upload")
    r = httpx.post(app.url + "gradio_api/component_server", timeout=120,
                   json={"data": {"lam": 0.1, "threshold": 0.5, **data, "session": session},
                         "component_id": upload_view._id,
                         "fn_name": "analyse_file", "session_hash": session})
    r.raise_for_status()
    return json.loads(r.json())


def call_api(app, api_name, data):
    """POST through Gradio's REST route (gradio_api/call/NAME) with a body json.dumps writes
    as-is (NaN included); the event stream's text."""
    with httpx.Client(base_url=app.url, timeout=60) as http:
        body = json.dumps({"data": data})
        event = http.post(f"gradio_api/call/{api_name}", content=body,
                          headers={"content-type": "application/json"}).json()["event_id"]
        return http.get(f"gradio_api/call/{api_name}/{event}").text


def raw_upload(app, path):
    """Gradio's upload route with one file; the path the server keeps it at."""
    with open(path, "rb") as f:
        r = httpx.post(app.url + "gradio_api/upload", timeout=60,
                       files={"files": (Path(path).name, f, "image/jpeg")})
    r.raise_for_status()
    return r.json()[0]


def file_value(path, name=None, marked=False):
    """A file payload; without Gradio's file marker (the hole: Gradio checks marked ones)."""
    value = {"path": str(path), "orig_name": name or Path(path).name}
    return {**value, "meta": {"_type": "gradio.FileData"}} if marked else value


def status_of(output):
    return output[0]


def scores_of(output):
    """The numbers in an analysis's answer (the scores view's value: JSON text), or None."""
    return json.loads(output[1]) if output[1] else None
