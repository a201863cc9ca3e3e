"""GlobalCom²: the global thumbnail of an anyres image decides how much of each crop to keep."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_number
from ..ops import l2_normalize, order, select, top_k
from ..registry import register


@dataclass(frozen=True)
class Anyres:
    """One image's structure read from its `anyres` places: token indices of the thumbnail
    (raster order on its (h, w) grid) and of the crops (raster order on the unpadded tiled
    grid, `box` = (top, left, height, width) of it), and the crop grid (rows, columns)."""

    thumbnail: Tensor
    shape: tuple[int, int]
    crops: Tensor
    rows: Tensor
    cols: Tensor
    box: tuple[int, int, int, int]
    grid: tuple[int, int]


def anyres_image(places: Tensor) -> Anyres | None:
    """The structure of one image's (N, 3) `anyres` places; None where it has no thumbnail and
    no crops. Raises `ValueError` where the places do not describe a thumbnail filling its grid
    once and crops filling one rectangle of the tiled grid once."""
    view, row, col = places.unbind(-1)
    if bool(((view < -1) | (view > 1)).any()):
        raise ValueError("anyres views must be 0 (thumbnail), 1 (crop) or -1 (no patch)")
    thumb, crop = (view == 0).nonzero().flatten(), (view == 1).nonzero().flatten()
    if thumb.numel() == 0:
        if crop.numel():
            raise ValueError("anyres has crop tokens but no thumbnail (view 0): pass the global view too")
        return None
    h, w = int(row[thumb].max()) + 1, int(col[thumb].max()) + 1
    key = row[thumb] * w + col[thumb]
    negative = bool((row[thumb] < 0).any() or (col[thumb] < 0).any())
    if negative or thumb.numel() != h * w or key.unique().numel() != h * w:
        raise ValueError(f"the thumbnail's anyres places must fill its {h} x {w} grid once each")
    thumb = thumb[key.argsort()]
    if crop.numel() == 0:
        empty = crop.new_zeros(0)
        return Anyres(thumb, (h, w), empty, empty, empty, (0, 0, 0, 0), (0, 0))
    r, c = row[crop], col[crop]
    top, left = int(r.min()), int(c.min())
    height, width = int(r.max()) - top + 1, int(c.max()) - left + 1
    key = (r - top) * width + (c - left)
    if top < 0 or left < 0 or crop.numel() != height * width or key.unique().numel() != crop.numel():
        raise ValueError(
            "the crops' anyres places must fill one rectangle of the tiled grid once each (the "
            "unpadded crops, on the grid of all crops side by side)"
        )
    sort = key.argsort()
    # unpadding cuts as many rows (columns) at the end as at the start: 2 * top + height rows
    grid = (-(-(2 * top + height) // h), -(-(2 * left + width) // w))
    return Anyres(thumb, (h, w), crop[sort], r[sort], c[sort], (top, left, height, width), grid)


@register("globalcom2")
@dataclass
class GlobalCom2(Method):
    """GlobalCom² (Liu et al., "Global Compression Commander: Plug-and-Play Inference
    Acceleration for High-Resolution Large Vision-Language Models", AAAI 2026, arXiv
    2501.05179): the global thumbnail of an anyres image (LLaVA-NeXT) judges how informative
    each crop is, and each crop keeps tokens in proportion.

    From the [CLS] scores s (`cls_attention` averaged over heads): the thumbnail keeps its
    int(h * w * ratio) highest-scored tokens, in score order. Its grid is cut into the crop
    grid's R x C regions (region rows h // R, the last region taking the rest; columns alike);
    the region sums S give crop q the retention ratio r_q = min(1, ratio * (1 + p_q - mean(p)))
    with p = softmax((S - max S) / temperature) (its denominator + 1e-8). Crop q keeps the
    int(n_q * r_q) of its n_q tokens (after unpadding) that score highest by
    s / ||s|| + g / ||g|| over the crop, g the thumbnail's scores resized bilinearly
    (align_corners=False) onto the unpadded tiled grid. Tokens that stand for no patch (the
    rows' newlines) are kept. Output: the thumbnail's tokens, then the crops' kept tokens and
    the newlines in input order. An image without crops is kept whole, as officially
    (`llava/model/llava_arch.py`: `compress_thumbnail`, `generate_scale_for_crop_features`,
    `compress_crops`). In `reproductions.hf` it runs on LLaVA-NeXT; LLaVA-OneVision's SigLIP
    has no [CLS].

    Parameters: `ratio` (the official `retention_ratio`, 0.25), `temperature` (10.0).
    Signals: `anyres` (each token's view and place), `cls_attention` (B, heads, N). The
    official scores are the last CLIP layer's [CLS] attention logits, q k^T / sqrt(d) before
    the softmax, averaged over heads (its `CustomCLIPAttention`), of the thumbnail's and each
    crop's own encoder pass: pass those (`cls_from = "last_logits"`, which `reproductions.hf`
    supplies); softmax probabilities make every crop's ratio nearly `ratio`.

    Differences from the official code:
    - The official writes each crop's kept tokens back at their index among the crop's
      unpadded tokens read as an index into the padded crop, which misplaces them wherever the
      crop was unpadded, and adds a newline to every row of the padded grid. Here the kept
      tokens stay where they are, among the input's newlines (the model's own packing).
    - In `reproductions.hf` the crops are unpadded by transformers, `int(round(x, 7))` where the
      official takes `int(x)`: the same rows unless float error lands just below an integer.
    - The official allocates from the first image's thumbnail for every image of a batch
      (`cls_attn_scores[0]`); here each image uses its own.
    - Scores are compared in float64 (the official: float16 on the GPU); ties go to the lower
      index (`torch.topk` and `argsort` promise no order).
    - A thumbnail of h x w tokens with h != w splits its rows and columns separately (the
      official takes a square side, int(sqrt(N))).
    """

    ratio: float = 0.25
    temperature: float = 10.0

    paper = "liu2025global"
    stage = "projector"
    mechanisms = ("attention",)
    needs = ("cls_attention", "anyres")
    cls_from = "last_logits"
    special_tokens = (0,)
    budget_knob = "ratio"
    #: the example inputs carry softmax probabilities, whose region sums differ by far less
    #: than logits do: a small temperature gives them the official's peaked allocation
    example = {"ratio": 0.25, "temperature": 1e-4}
    benchmark = {"ratio": 0.25}

    def __post_init__(self) -> None:
        check_number("ratio", self.ratio, 0.0, 1.0, open_low=True,
                     hint="pass the retention ratio in (0, 1] (the official 0.25)")
        check_number("temperature", self.temperature, 0.0, open_low=True, open_high=True, high=math.inf,
                     hint="pass a finite softmax temperature > 0 (the official 10.0)")

    def check_inputs(self, tokens: Tokens) -> None:
        for places in tokens.anyres:
            anyres_image(places)

    def compress(self, tokens: Tokens) -> Compression:
        kept = [self.kept(tokens, b) for b in range(tokens.batch)]
        counts = sorted({len(k) for k in kept})
        if len(counts) > 1:
            raise ValueError(
                f"the images of this batch keep different token counts {counts}: pass one image at a time"
            )
        return select(tokens, torch.stack(kept))

    def shares(self, thumbnail: Tensor, grid: tuple[int, int]) -> list[float]:
        """Each crop's retention ratio, raster order over the crop grid, from the thumbnail's
        (h, w) scores summed over the region of the thumbnail that the crop covers."""
        (h, w), (rows, cols) = thumbnail.shape, grid
        i = (torch.arange(h, device=thumbnail.device) // max(h // rows, 1)).clamp(max=rows - 1)
        j = (torch.arange(w, device=thumbnail.device) // max(w // cols, 1)).clamp(max=cols - 1)
        region = (i[:, None] * cols + j[None, :]).flatten()
        sums = thumbnail.new_zeros(rows * cols).index_add_(0, region, thumbnail.flatten())
        exp = ((sums - sums.max()) / self.temperature).exp()
        soft = exp / (exp.sum() + 1e-8)
        return (self.ratio * (1 + soft - soft.mean())).clamp(max=1.0).tolist()

    def kept(self, tokens: Tokens, b: int) -> Tensor:
        """The indices row `b` keeps, in output order."""
        device = tokens.features.device
        places = tokens.anyres[b].to(device)
        image = anyres_image(places)
        if image is None or image.crops.numel() == 0:
            return torch.arange(tokens.count, device=device)
        scores = tokens.cls_attention[b].to(torch.float64).mean(0)
        (h, w), (rows, cols) = image.shape, image.grid
        thumbnail = scores[image.thumbnail].view(h, w)
        first = image.thumbnail[order(thumbnail.flatten())[: int(h * w * self.ratio)]]
        _, _, height, width = image.box
        resized = F.interpolate(thumbnail[None, None], size=(height, width), mode="bilinear", align_corners=False)
        glob = resized.flatten()  # aligned with image.crops (raster order on the unpadded grid)
        crop_of = (image.rows // h) * cols + image.cols // w
        rest = [(places[:, 0] == -1).nonzero().flatten()]
        for q, share in enumerate(self.shares(thumbnail, (rows, cols))):
            members = (crop_of == q).nonzero().flatten()
            combined = l2_normalize(scores[image.crops[members]]) + l2_normalize(glob[members])
            rest.append(image.crops[members[top_k(combined, int(len(members) * share))]])
        return torch.cat([first, torch.cat(rest).sort().values])
