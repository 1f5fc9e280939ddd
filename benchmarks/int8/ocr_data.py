"""Real-weight OCR benchmark data: rendered text lines for the PP-OCR text recognizer shipped in
the rapidocr wheel, preprocessed exactly as rapidocr feeds its recognizer.

    python benchmarks/int8/ocr_data.py [--recognizer v6|v4] [--calib 300] [--eval 200] [--seed 0] [--out DIR]

Recognizers (both ship inside their PyPI wheels; nothing is downloaded at run time):
  v6 (default)  rapidocr/models/PP-OCRv6_rec_small.onnx from rapidocr 3.x (3.10.0 tested), 18708
                characters (Chinese, Latin scripts, symbols); writes data/
  v4            rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx from rapidocr-onnxruntime
                1.4.4 (pip install --no-deps rapidocr-onnxruntime==1.4.4), 6623 characters; writes
                data/v4/

Writes into --out:

- rec.onnx     the FP32 recognizer, copied unchanged from the installed package
- dict.txt     its character dictionary, one entry per line, as rapidocr reads it: the model's
               `character` metadata, split with str.splitlines() (rapidocr adds the CTC blank at
               index 0 and " " at the end itself; dict.txt holds neither)
- calib.npz    {input name: float32 [N, 3, 48, 320]}: calibration lines, nothing else (graphopt
               takes it as is with --calib)
- eval.npz     {input name: float32 [M, 3, 48, 320], "text": the ground-truth strings}
- lines.json   seed, fonts and ground truth of both sets; samples/*.png: a few rendered lines

Lines (seeded): English-like words in mixed case, numbers, prices, dates, codes and punctuation,
and, since the dictionary is Chinese + Latin, about a fifth Chinese lines (GB2312 level-1
characters, sometimes with digits) in a CJK font. Each is rendered in one of several Debian fonts
(fonts-dejavu-core, fonts-liberation2, fonts-noto-core; fonts-wqy-microhei for Chinese) at 18-40 px,
dark text on a white or light background, with slight Gaussian noise and sometimes a slight blur.

Preprocessing is rapidocr's TextRecognizer.resize_norm_img (rapidocr/ch_ppocr_rec/main.py) with
rec_img_shape [3, 48, 320] and one line per batch: the BGR crop is resized (cv2.resize, bilinear)
to height 48 keeping its aspect ratio, scaled to [-1, 1] ((x/255 - 0.5) / 0.5), CHW, and padded
with zeros on the right to width 320. Lines are generated so that they fit 320 at height 48
(width/height <= 320/48), so none is squeezed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REC_SHAPE = (3, 48, 320)
# --recognizer: (python package, file inside it, pip requirement, default output folder)
RECOGNIZERS = {
    "v6": ("rapidocr", "models/PP-OCRv6_rec_small.onnx", "rapidocr>=3,<4", "data"),
    "v4": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", "rapidocr-onnxruntime==1.4.4", "data/v4"),
}

LATIN_FONTS = [
    "dejavu/DejaVuSans.ttf", "dejavu/DejaVuSans-Bold.ttf", "dejavu/DejaVuSerif.ttf",
    "dejavu/DejaVuSansMono.ttf", "dejavu/DejaVuSansCondensed.ttf", "dejavu/DejaVuSerif-Italic.ttf",
    "liberation2/LiberationSans-Regular.ttf", "liberation2/LiberationSans-Bold.ttf",
    "liberation2/LiberationSerif-Regular.ttf", "liberation2/LiberationMono-Regular.ttf",
    "liberation2/LiberationSans-Italic.ttf",
    "noto/NotoSans-Regular.ttf", "noto/NotoSerif-Regular.ttf", "noto/NotoSans-Bold.ttf",
]
CJK_FONTS = ["wqy/wqy-microhei.ttc"]
FONT_ROOT = "/usr/share/fonts/truetype"

WORDS = """the of and to in is that for it as was with be by on not he this are or his from at which but
have an they you were her she there been one all we their has would when if so no what up out more said
about some them time can only other new these two may first then do any like my now over such our man me
even most made after also well did many before must through back years where much your way down should
because long each just state people those too how little good world very still own see men work here
between both life being under never day same another know while last might us great old year off come
since against go came right used take three states himself few house use during without again place
around however home small found thus went say part once general high upon school every does got united
left number course war until always away something fact though water less public put think almost hand
enough far took head yet government system better set told nothing night end why called didn't eyes find
going look asked later knew point next city business give group toward young let room president side
social given present several order national second possible rather per face among form important often
things looking early white case john become large big need four within felt along children saw best
church ever least power development thought light country invoice total amount price receipt account
customer address phone email order payment date due balance quantity item description tax discount
street avenue road building floor suite station airport hotel market bank office page chapter section
table figure version model serial number code reference status approved pending delivered warehouse""".split()
PUNCT = ".,;:!?-'\"()[]/&%#@+*=_"


# ------------------------------------------------------------------------------ model and dictionary
def find_model(which: str) -> str:
    import importlib.util

    package, inner, requirement, _ = RECOGNIZERS[which]
    spec = importlib.util.find_spec(package)  # not imported: only the file it ships is needed
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"ocr_data: {package} is not installed (pip install '{requirement}'; "
                 f"rapidocr-onnxruntime can go in with --no-deps)")
    path = os.path.join(list(spec.submodule_search_locations)[0], inner)
    if not os.path.exists(path):
        sys.exit(f"ocr_data: {path} not found: this {package} does not ship {os.path.basename(inner)} "
                 f"(pip install '{requirement}')")
    return path


def model_dictionary(model_path: str) -> list[str]:
    """The character list exactly as rapidocr's onnxruntime engine reads it (get_character_list)."""
    import onnx

    m = onnx.load(model_path, load_external_data=False)
    meta = {p.key: p.value for p in m.metadata_props}
    if "character" not in meta:
        sys.exit(f"ocr_data: {model_path} has no 'character' metadata")
    return meta["character"].splitlines()


def input_name(model_path: str) -> str:
    import onnx

    m = onnx.load(model_path, load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in inits][0]


# ------------------------------------------------------------------------------ preprocessing
def resize_norm_img(img_bgr: np.ndarray, shape=REC_SHAPE) -> np.ndarray:
    """rapidocr TextRecognizer.resize_norm_img with max_wh_ratio = W/H (one line per batch)."""
    import cv2

    img_channel, img_height, img_width = shape
    max_wh_ratio = img_width / img_height
    img_width = int(img_height * max_wh_ratio)
    h, w = img_bgr.shape[:2]
    ratio = w / float(h)
    resized_w = img_width if math.ceil(img_height * ratio) > img_width else int(math.ceil(img_height * ratio))
    resized = cv2.resize(img_bgr, (resized_w, img_height)).astype("float32")
    resized = resized.transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    out = np.zeros((img_channel, img_height, img_width), dtype=np.float32)
    out[:, :, 0:resized_w] = resized
    return out


# ------------------------------------------------------------------------------ text
def cjk_chars(dictionary: list[str]) -> list[str]:
    """Common Chinese characters the recognizer knows: GB2312 level 1 (first byte 0xB0-0xD7)."""
    out = []
    for ch in dictionary:
        if len(ch) != 1 or not ("\u4e00" <= ch <= "\u9fff"):
            continue
        try:
            b = ch.encode("gb2312")
        except UnicodeEncodeError:
            continue
        if 0xB0 <= b[0] <= 0xD7:
            out.append(ch)
    return sorted(out)


def word(rng) -> str:
    w = WORDS[rng.integers(len(WORDS))]
    r = rng.random()
    if r < 0.25:
        w = w.capitalize()
    elif r < 0.35:
        w = w.upper()
    elif r < 0.42:  # random mixed case
        w = "".join(c.upper() if rng.random() < 0.4 else c for c in w)
    return w


def number(rng) -> str:
    k = rng.integers(8)
    if k == 0:
        return str(rng.integers(0, 100000))
    if k == 1:
        return f"{rng.integers(0, 10000)}.{rng.integers(0, 100):02d}"
    if k == 2:
        return f"${rng.integers(1, 5000):,}.{rng.integers(0, 100):02d}"
    if k == 3:
        return f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/{rng.integers(1990, 2031)}"
    if k == 4:
        return f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}"
    if k == 5:
        return f"{rng.integers(1, 100)}%"
    if k == 6:
        return f"+{rng.integers(1, 99)} {rng.integers(100, 999)}-{rng.integers(1000, 9999)}"
    return f"#{rng.integers(100, 99999)}"


def code(rng) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    n = int(rng.integers(4, 9))
    s = "".join(alphabet[i] for i in rng.integers(0, len(alphabet), n))
    return s[:3] + "-" + s[3:] if rng.random() < 0.5 else s


def latin_line(rng) -> str:
    parts = []
    for _ in range(int(rng.integers(1, 5))):
        r = rng.random()
        tok = word(rng) if r < 0.62 else number(rng) if r < 0.85 else code(rng)
        if rng.random() < 0.2:
            tok += PUNCT[rng.integers(0, 6)]  # . , ; : ! ?
        elif rng.random() < 0.06:
            p = rng.integers(0, 3)
            tok = ["(" + tok + ")", '"' + tok + '"', "[" + tok + "]"][p]
        parts.append(tok)
    sep = " " if rng.random() < 0.85 else rng.choice([" - ", " / ", ": ", ", "])
    return sep.join(parts)


def chinese_line(rng, chars: list[str]) -> str:
    n = int(rng.integers(2, 8))
    s = "".join(chars[i] for i in rng.integers(0, len(chars), n))
    r = rng.random()
    if r < 0.25:
        s += str(rng.integers(1, 1000))
    elif r < 0.4:
        s = str(rng.integers(1, 100)) + s
    return s


# ------------------------------------------------------------------------------ rendering
def render(text: str, font_path: str, size: int, rng):
    """An RGB crop of one text line with a small margin, light background, slight noise/blur."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    font = ImageFont.truetype(font_path, size)
    left, top, right, bottom = font.getbbox(text)
    ascent, descent = font.getmetrics()
    mx, my = int(rng.integers(2, 10)), int(rng.integers(1, max(2, size // 4)))
    w = right - left + 2 * mx
    h = ascent + descent + 2 * my
    bg = 255 - int(rng.integers(0, 40)) if rng.random() < 0.6 else 255
    tint = rng.integers(-8, 9, 3) if bg < 255 else np.zeros(3, int)
    bg_rgb = tuple(int(np.clip(bg + t, 0, 255)) for t in tint)
    fg = int(rng.integers(0, 80))
    fg_rgb = tuple(int(np.clip(fg + t, 0, 255)) for t in rng.integers(-10, 30, 3))
    img = Image.new("RGB", (w, h), bg_rgb)
    ImageDraw.Draw(img).text((mx - left, my), text, font=font, fill=fg_rgb)
    if rng.random() < 0.35:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.9))))
    a = np.asarray(img).astype(np.float32)
    sigma = float(rng.uniform(0, 8))
    a += rng.normal(0, sigma, a.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


def make_lines(n: int, rng, dictionary: set, cjk: list[str], latin_fonts: list[str], cjk_fonts: list[str],
               cjk_share: float = 0.2):
    """n (text, font, size, preprocessed array, rgb crop); every text uses dictionary characters only
    and fits 320x48 without squeezing."""
    limit = REC_SHAPE[2] / REC_SHAPE[1]
    out = []
    while len(out) < n:
        chinese = cjk and cjk_fonts and rng.random() < cjk_share
        text = chinese_line(rng, cjk) if chinese else latin_line(rng)
        if any(c not in dictionary and c != " " for c in text) or not text.strip():
            continue
        fonts = cjk_fonts if chinese else latin_fonts
        font = fonts[int(rng.integers(len(fonts)))]
        size = int(rng.integers(18, 41))
        rgb = render(text, font, size, rng)
        if rgb.shape[1] / rgb.shape[0] > limit:
            continue  # too long for 320 px at height 48: draw another line
        x = resize_norm_img(np.ascontiguousarray(rgb[:, :, ::-1]))  # rapidocr works on BGR (cv2) crops
        out.append((text, os.path.relpath(font, FONT_ROOT), size, x, rgb))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recognizer", choices=sorted(RECOGNIZERS), default="v6",
                    help="v6: PP-OCRv6_rec_small from the rapidocr 3.x wheel (default, into data/); "
                         "v4: ch_PP-OCRv4_rec_infer from rapidocr-onnxruntime 1.4.4 (into data/v4/)")
    ap.add_argument("--out", default=None, help="output folder (default: data/ or data/v4/ beside this file)")
    ap.add_argument("--calib", type=int, default=300, help="calibration lines (default 300)")
    ap.add_argument("--eval", type=int, default=200, help="evaluation lines (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cjk-share", type=float, default=0.2, help="share of Chinese lines (default 0.2)")
    args = ap.parse_args(argv)

    src = find_model(args.recognizer)
    args.out = args.out or os.path.join(HERE, RECOGNIZERS[args.recognizer][3])
    os.makedirs(args.out, exist_ok=True)
    rec = os.path.join(args.out, "rec.onnx")
    shutil.copyfile(src, rec)
    dictionary = model_dictionary(src)
    with open(os.path.join(args.out, "dict.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(dictionary))
    name = input_name(src)

    latin = [os.path.join(FONT_ROOT, p) for p in LATIN_FONTS if os.path.exists(os.path.join(FONT_ROOT, p))]
    cjk_fonts = [os.path.join(FONT_ROOT, p) for p in CJK_FONTS if os.path.exists(os.path.join(FONT_ROOT, p))]
    if len(latin) < 3:
        sys.exit("ocr_data: install the fonts first: apt-get install fonts-dejavu-core fonts-liberation2 "
                 "fonts-noto-core fonts-wqy-microhei")
    if not cjk_fonts:
        print("ocr_data: no CJK font (apt-get install fonts-wqy-microhei): Latin lines only", file=sys.stderr)
    cjk = cjk_chars(dictionary)

    rng = np.random.default_rng(args.seed)
    dset = set(dictionary)
    calib = make_lines(args.calib, rng, dset, cjk, latin, cjk_fonts, args.cjk_share)
    seen = {t for t, *_ in calib}
    evals = []
    while len(evals) < args.eval:  # eval lines never repeat a calibration line
        for line in make_lines(args.eval - len(evals), rng, dset, cjk, latin, cjk_fonts, args.cjk_share):
            if line[0] not in seen:
                evals.append(line)
                seen.add(line[0])

    np.savez(os.path.join(args.out, "calib.npz"), **{name: np.stack([x for *_, x, _ in calib])})
    np.savez(os.path.join(args.out, "eval.npz"), **{name: np.stack([x for *_, x, _ in evals]),
                                                    "text": np.array([t for t, *_ in evals])})
    meta = {"model": {"recognizer": args.recognizer, "source": src, "sha256": _sha256(rec), "input": name, "dictionary_entries": len(dictionary)},
            "seed": args.seed, "shape": list(REC_SHAPE),
            "calib": [{"text": t, "font": f, "size": s} for t, f, s, _, _ in calib],
            "eval": [{"text": t, "font": f, "size": s} for t, f, s, _, _ in evals]}
    with open(os.path.join(args.out, "lines.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
    from PIL import Image

    os.makedirs(os.path.join(args.out, "samples"), exist_ok=True)
    for i, (t, _, _, _, rgb) in enumerate(evals[:12]):
        Image.fromarray(rgb).save(os.path.join(args.out, "samples", f"eval{i:02d}.png"))
    n_cjk = sum(any("\u4e00" <= c <= "\u9fff" for c in t) for t, *_ in calib + evals)
    print(f"ocr_data: {len(calib)} calibration + {len(evals)} evaluation lines ({n_cjk} Chinese) in "
          f"{len(latin)} Latin + {len(cjk_fonts)} CJK fonts; model {os.path.basename(src)} "
          f"({len(dictionary)} characters), input {name!r} -> {args.out}")
    return 0


def _sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


if __name__ == "__main__":
    sys.exit(main())
