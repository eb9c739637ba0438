"""How faithful each map is: the real photos with the embedded model, and a synthetic set.

    python bench/faithfulness.py                      # both parts, about 5 minutes on an idle 2-core CPU
    python bench/faithfulness.py --no-synthetic --steps 16

Part 1: the seven photos of assets/ with the embedded EfficientNet-Lite0 + CSRA at the lambda the
page serves it (0.1), one (photo, ImageNet class) pair per object named in PAIRS below, boxes
from assets/boxes.json. Part 2: a synthetic set (training.make_synthetic) and a resnet18 + CSRA
trained on it here from scratch, every (test image, class) pair with boxes. For both: the table of
csra.faithfulness (the CSRA map, the pooling weights, Grad-CAM through Captum, a centre Gaussian, a
random map): TorchRay's pointing game (15 px, mean over classes), the same pooled over pairs,
the energy pointing game, the mean deletion and insertion AUCs. Then the time of
csra.faithfulness.check_map, the page's call, and of one of its batches, with the embedded model
(torch.utils.benchmark). Last line: RESULT with the real photos' means over their pairs.
"""
import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils import benchmark

import csra
from csra import faithfulness as fa

ROOT = Path(__file__).resolve().parents[1]

# photo -> (ImageNet class, label of its object's box in assets/boxes.json): every object of the
# photos that an ImageNet class names (ImageNet has no person, saucer or flag)
PAIRS = {
    "cat.jpg": [("tabby", "cat"), ("Egyptian cat", "cat")],
    "cat_and_person.jpg": [("tabby", "cat"), ("Egyptian cat", "cat"),
                           ("space shuttle", "space shuttle model"), ("football helmet", "helmet")],
    "astronaut.jpg": [("football helmet", "helmet"), ("space shuttle", "space shuttle model")],
    "grace_hopper.jpg": [("military uniform", "person in navy uniform"), ("flagpole", "flag"),
                         ("bow tie", "bow tie")],
    "camera_gray.jpg": [("tripod", "camera on a tripod"), ("reflex camera", "camera")],
    "coffee.jpg": [("espresso", "cup of espresso"), ("cup", "cup of espresso")],
    "rocket.jpg": [("missile", "rocket"), ("projectile", "rocket")],
}
SERVED_LAM = 0.1  # the page's lambda for the embedded model (app/weights.py)
TIMED_PHOTO, TIMED_CLASS = "grace_hopper.jpg", "military uniform"


def photo_pairs(model):
    """[(photo, [Pair])]: boxes.json's [x0, y0, x1, y1] pixel edges as VOC boxes (1-based inclusive)."""
    boxes = json.loads((ROOT / "assets" / "boxes.json").read_text())["boxes"]
    out = []
    for photo, pairs in PAIRS.items():
        by_label = {o["label"]: o["box"] for o in boxes[photo]}
        out.append((photo, [fa.Pair(model.class_names.index(name), [(x0 + 1, y0 + 1, x1, y1)])
                            for name, label in pairs for x0, y0, x1, y1 in [by_label[label]]]))
    return out


def print_table(rows, title):
    print(f"\n{title}\n")
    print("| map | pairs | pointing game, TorchRay (%) | pooled over pairs (%) | difficult-only pairs (%) "
          "| energy in boxes (%) | deletion AUC (lower: better) | insertion AUC (higher: better) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        hard = f"{r['pointing_difficult']:.1f} of {r['difficult_pairs']}" if r["difficult_pairs"] else "-"
        print(f"| {r['method']} | {r['pairs']} | {r['pointing']:.1f} | {r['pointing_pooled']:.1f} | {hard} | "
              f"{r['energy']:.1f} | {r['deletion_auc']:.3f} | {r['insertion_auc']:.3f} |", flush=True)


def real_photos(model, steps, batch_size):
    records = []
    for k, (photo, pairs) in enumerate(photo_pairs(model)):
        image = csra.load_image(ROOT / "assets" / photo)
        _, found = fa.measure_image(model, image, pairs, steps=steps, batch_size=batch_size,
                                    rng=np.random.default_rng([0, k]))
        records += found
    return fa.summarize(records)


def synthetic(args, device):
    """A synthetic set, resnet18 + CSRA trained here, and the table over its test pairs."""
    from training import train
    from training.datasets import open_dataset
    from training.evaluate import faithfulness_pairs
    from training.make_synthetic import make_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic(Path(tmp) / "data", seed=0, num_train=args.synthetic_train,
                              num_test=args.synthetic_test, size=112, progress=False)
        code = train.main(["--data-root", str(data), "--out", str(Path(tmp) / "run"), "--backbone", "resnet18",
                           "--pretrained", "none", "--img-size", "112", "--epochs", str(args.synthetic_epochs),
                           "--batch-size", "16", "--lr", "0.05", "--warmup-epochs", "1", "--lr-step", "4",
                           "--workers", "0", "--no-progress", "--device", str(device)])
        if code != 0:
            raise SystemExit(f"training on the synthetic set failed (exit {code})")
        model = csra.load_checkpoint(Path(tmp) / "run" / "best.pth").to(device).eval()
        split = open_dataset(data, "test")
        order = list(range(len(split.classes)))
        records = []
        for i in range(len(split)):
            pairs = faithfulness_pairs(split, i, order)
            if pairs:
                _, found = fa.measure_image(model, csra.load_image(split.image_paths[i]), pairs, steps=args.steps,
                                            batch_size=args.batch_size, rng=np.random.default_rng([0, i]))
                records += found
        return model, len(split), fa.summarize(records)


def timings(model, steps, batch_size, min_time):
    """Median seconds of check_map (the page's methods) and of one batch of perturbed images."""
    image = csra.load_image(ROOT / "assets" / TIMED_PHOTO)
    c = model.class_names.index(TIMED_CLASS)
    threads = torch.get_num_threads()
    out = {}
    for n in sorted({10, steps}):
        fa.check_map(model, image, c, steps=n, batch_size=batch_size)  # warm-up
        timer = benchmark.Timer("check(model, image, c, steps=n, batch_size=b)", num_threads=threads,
                                globals={"check": fa.check_map, "model": model, "image": image, "c": c, "n": n,
                                         "b": batch_size})
        out[n] = timer.blocked_autorange(min_run_time=min_time).median
    one = model.preprocessing(image)[None].to(next(model.parameters()).device)
    forward = fa.logits_at(model, model.lam)
    with torch.inference_mode():
        for key, x in (("batch", one.expand(batch_size, -1, -1, -1)), ("one", one)):
            forward(x)
            timer = benchmark.Timer("forward(x)", num_threads=threads, globals={"forward": forward, "x": x})
            out[key] = timer.blocked_autorange(min_run_time=min_time).median
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python bench/faithfulness.py", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12, help="points per curve minus one (default 12)")
    p.add_argument("--batch-size", type=int, default=8, help="perturbed images per forward pass (default 8)")
    p.add_argument("--lam", type=float, default=SERVED_LAM, help="lambda of the embedded model (default 0.1)")
    p.add_argument("--synthetic", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--synthetic-train", type=int, default=400)
    p.add_argument("--synthetic-test", type=int, default=40)
    p.add_argument("--synthetic-epochs", type=int, default=6)
    p.add_argument("--min-time", type=float, default=3.0, help="seconds of timing for each timed call")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    device = csra.pick_device(args.device)
    torch.manual_seed(0)
    # as the page runs it: eval mode, on the device, channels-last weights
    model = csra.prepare_for_inference(csra.from_classifier("efficientnet_lite0", lam=args.lam), device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}; "
          f"{args.steps} steps per curve, batches of {args.batch_size}, blurred baseline (RISE)")
    real = real_photos(model, args.steps, args.batch_size)
    print_table(real, f"Real photos (assets/, {sum(len(v) for v in PAIRS.values())} (photo, ImageNet class) pairs), "
                      f"embedded EfficientNet-Lite0 + CSRA, lambda {args.lam:g}, 224 px, softmax probabilities:")
    synth = None
    if args.synthetic:
        synth_model, images, synth = synthetic(args, device)
        print_table(synth, f"Synthetic shapes ({images} test images at 112 px; resnet18 + CSRA trained here for "
                           f"{args.synthetic_epochs} epochs on {args.synthetic_train} images), lambda "
                           f"{synth_model.lam:g}, sigmoid probabilities:")
    times = timings(model, args.steps, args.batch_size, args.min_time)
    print(f"\ncsra.faithfulness.check_map ({', '.join(fa.PAGE_METHODS)}; {TIMED_PHOTO}, {TIMED_CLASS!r}), "
          "median of torch.utils.benchmark:")
    for n in sorted(k for k in times if isinstance(k, int)):
        images = 2 + len(fa.PAGE_METHODS) * 2 * (n - 1)
        print(f"  {n} steps per curve ({images} images through the network): {times[n]:.3f} s")
    print(f"  one batch of {args.batch_size} perturbed images (the longest stretch between two cancel checks): "
          f"{times['batch'] * 1000:.0f} ms; one image alone (for scale): {times['one'] * 1000:.0f} ms")
    by = {r["method"]: r for r in real}
    fields = [f"{m}_{what}={by[m][key]:.4f}" for what, key in (("deletion", "deletion_auc"),
                                                               ("insertion", "insertion_auc"))
              for m in ("csra", "gradcam", "random")]
    fields += [f"{m}_pointing={by[m]['pointing_pooled']:.1f}" for m in ("csra", "gradcam")]
    fields += [f"check_map_s={times[args.steps]:.3f}", f"check_map_10_steps_s={times[10]:.3f}",
               f"batch_ms={times['batch'] * 1000:.0f}", f"forward_ms={times['one'] * 1000:.0f}"]
    if synth:
        s = {r["method"]: r for r in synth}
        fields += [f"synth_{m}_{what}={s[m][key]:.4f}" for m in ("csra", "gradcam", "random")
                   for what, key in (("deletion", "deletion_auc"), ("insertion", "insertion_auc"))]
    print("RESULT " + " ".join(fields))


if __name__ == "__main__":
    main()
