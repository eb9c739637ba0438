"""The Gradio explainability app (started by app.py): see what CSRA recognises and where.

inference.py  numbers from one network run per image, rescored at any lambda
render.py     pictures: overlays, heatmap tiles, comparison panels, pooling weights (JPEG data URIs)
page.py       the page's handlers without Gradio (what bench/app_latency.py times)
explorer.js   the browser side: scores, table, chart and captions at any lambda and threshold
exports.py    CSV / JSON / PNG-zip downloads
models.py     the model options shared by all sessions, devices
weights.py    which checkpoint to serve, and the message when there is none
ui.py         the gr.Blocks page and its events
"""
