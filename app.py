"""The CSRA explorer web page: python app.py [--weights PATH_OR_URL] [--port 7860] ...

Weights: --weights, else the newest runs/*/best.pth here, else mmpretrain's
VOC07 checkpoint (downloaded once into torch.hub's cache), else the embedded
EfficientNet-Lite0 ImageNet classifier + CSRA (no download: its weights come
with an installed package), with a banner on the page saying why. See README.
"""
import argparse
import logging
import os
import signal
import sys

# Gradio's usage statistics would try the network; this tool runs offline too.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def parse_args(argv=None):
    from csra.device import DEVICE_CHOICES

    p = argparse.ArgumentParser(
        prog="python app.py", description="The CSRA explorer web page: upload an image, see the "
        "class scores, where each class looks, and what lambda changes.")
    p.add_argument("--weights", default=None, metavar="PATH_OR_URL",
                   help="checkpoint to serve (default: newest runs/*/best.pth, else the official "
                        "mmpretrain VOC07 weights, else the embedded ImageNet classifier)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0: all interfaces)")
    p.add_argument("--port", type=int, default=7860, help="default 7860")
    p.add_argument("--share", action="store_true", help="also open a temporary public Gradio link")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="auto (default): CUDA when present, else Apple MPS, else CPU")
    p.add_argument("--classifier", default="auto", metavar="NAME",
                   help="ImageNet classifier for the 'no training' option, loaded when first picked "
                        "(default auto: resnet50 when torchvision's weights for it are cached, else "
                        "the embedded efficientnet_lite0; 'none' hides the option)")
    p.add_argument("--session-ttl", type=int, default=3600, metavar="SECONDS",
                   help="a session idle this long is forgotten: its image's analysis and the "
                        "server's copy of its page (default 3600)")
    args = p.parse_args(argv)
    if args.session_ttl < 1:
        p.error(f"--session-ttl must be a whole number of seconds >= 1, got {args.session_ttl}")
    return args


def stop_on_sigterm():
    """SIGTERM (what service managers, docker stop and kill send) does what Ctrl-C does:
    Gradio closes the server, main() returns and the exit handlers run, so the downloads
    folder is deleted. Python's default would end the process at once and leave it behind."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import csra
    from app.models import default_classifier, default_store
    from app.weights import NoWeights, load_served_model

    if args.classifier not in ("none", "auto") and args.classifier not in csra.CLASSIFIERS:
        print(f"error: --classifier {args.classifier!r} is not supported; choose one of "
              f"{', '.join(csra.CLASSIFIERS)}, 'auto' or 'none'", file=sys.stderr)
        return 2
    classifier = {"none": None, "auto": default_classifier()}.get(args.classifier, args.classifier)
    try:
        device = csra.pick_device(args.device)
    except csra.DeviceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        model, choice = load_served_model(args.weights)
    except NoWeights as err:
        print(err, file=sys.stderr)
        return 2
    except (csra.CheckpointError, csra.DownloadError) as err:
        print(f"error: cannot load the weights: {err}", file=sys.stderr)
        print("Give another checkpoint with --weights PATH_OR_URL.", file=sys.stderr)
        return 2
    print(f"Weights: {choice.source} ({choice.reason}); device: {device}")
    if choice.details:
        logging.getLogger("csra.app").warning("%s %s", choice.banner, choice.details)

    from dataclasses import replace

    from app.ui import LIMITS, build_demo, launch
    store = default_store(model, classifier=classifier, device=device, banner=choice.banner,
                          banner_details=choice.details)
    stop_on_sigterm()
    demo = None
    try:
        demo = build_demo(store, limits=replace(LIMITS, session_ttl_s=args.session_ttl))
        launch(demo, host=args.host, port=args.port, share=args.share)
    except KeyboardInterrupt:   # Ctrl-C or SIGTERM before Gradio serves, or while it starts
        if demo is not None:
            demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
