"""LLaVA-Scissor: semantic connected components per frame, then across frames, one token each."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_int, check_number
from ..ops import cosine_matrix, identity, stack_rows, work_dtype
from ..registry import register


def sample_size(n: int, epsilon: float | None) -> int:
    """How many of `n` nodes the approximate search starts from: min(n, ceil(ln n / epsilon^2)).

    `epsilon=None` samples every node (exact connected components).
    """
    if epsilon is None or n == 0:
        return n
    return min(n, math.ceil(math.log(n) / epsilon**2))


def roots(n: int, u: Tensor, v: Tensor) -> Tensor:
    """(n,) the lowest node index of each node's connected component, edges (u[e], v[e]).

    Hook-and-jump: every edge hooks the larger of its two roots under the smaller one, then
    every node jumps to its root; repeated until no edge joins two roots.
    """
    parent = torch.arange(n, device=u.device)
    while u.numel():
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not differ.any():
            break
        pu, pv = pu[differ], pv[differ]
        parent = parent.scatter_reduce(0, torch.maximum(pu, pv), torch.minimum(pu, pv), "amin")
        while True:
            jumped = parent[parent]
            if torch.equal(jumped, parent):
                break
            parent = jumped
    return parent


def semantic_components(adjacency: Tensor, sampled: Tensor) -> tuple[Tensor, Tensor]:
    """Connected components of G graphs of P nodes each, in the official output order.

    `adjacency` (G, P, P) bool is similarity > tau; `sampled` (G, P) bool the nodes whose rows
    are read: the edges are (i, j) with i sampled and adjacency[i, j], as in the official
    approximate search (all nodes sampled: the exact components of the graph). A component's
    representative is its node of highest degree (row count of `adjacency`), ties to the
    lower index; components are ordered by their representative's index, graph by graph.

    Returns `component` (G * P,), each node's output index, and `representative` (K,), each
    component's representative as an index in [0, G * P).
    """
    g, p, _ = adjacency.shape
    n = g * p
    pairs = adjacency.nonzero()  # (E, 3): graph, row, column
    row = pairs[:, 0] * p + pairs[:, 1]
    column = pairs[:, 0] * p + pairs[:, 2]
    read = sampled.flatten()[row] & (row != column)  # rows of sampled nodes; both directions
    root = roots(n, row[read], column[read])
    degree = torch.bincount(row, minlength=n)
    index = torch.arange(n, device=adjacency.device)
    key = degree * n + (n - 1 - index)  # highest degree first, then the lowest index
    best = torch.full((n,), -1, dtype=torch.long, device=adjacency.device)
    best = best.scatter_reduce(0, root, key, "amax")
    representative = (n - 1 - best[root == index] % n).sort().values
    slot = torch.empty(n, dtype=torch.long, device=adjacency.device)
    slot[representative] = torch.arange(representative.shape[0], device=adjacency.device)
    return slot[n - 1 - best[root] % n], representative


def component_means(x: Tensor, component: Tensor, count: int) -> Tensor:
    """(count, D) plain (unweighted) mean of the rows of `x` (M, D) in each component."""
    total = torch.zeros(count, x.shape[1], dtype=x.dtype, device=x.device)
    total.index_add_(0, component, x)
    members = torch.bincount(component, minlength=count).to(x.dtype)
    return total / members.unsqueeze(1)


@register("llava_scissor")
@dataclass
class LLaVAScissor(Method):
    """LLaVA-Scissor: merge each semantic connected component into one token, per frame, then
    across frames, then fold every original token into its nearest merged token.

    "LLaVA-Scissor: Token Compression with Semantic Connected Components for Video-LLMs"
    (Boyuan Sun, Jiaxing Zhao, Xihan Wei, Qibin Hou; arXiv 2506.21862, 2025), training-free,
    on the projected visual tokens (the official code runs it on LLaVA-OneVision's projector
    output, after its 2 x 2 pooling of each video frame). Semantic connected components (SCC)
    of a set of tokens: the graph whose edges join tokens of cosine similarity > `tau`; each
    component becomes the plain mean of its tokens.

    1. Spatial: SCC inside each frame (the layout's (T, H, W) frames; an image is one frame).
    2. Temporal: SCC over all step-1 tokens of all frames together (frame order), each
       component the plain mean of its step-1 tokens (not weighted by how many tokens those
       stand for), giving K tokens.
    3. Merge: every original token goes to its most cosine-similar step-2 token (ties: the
       first); output k = (step-2 token k + sum of the tokens sent to k) / (their count + 1).

    Components: the official approximate search reads the rows of ceil(ln n / epsilon^2)
    randomly sampled nodes of an n-node graph (all n when that is at least n: every frame of up
    to about 3,230 tokens at epsilon = 0.05), so the edges are those with a sampled end; nodes
    neither sampled nor next to a sampled node stay alone. A component is represented by its
    node of highest degree (ties: lower index), and components are ordered by their
    representative, so the K outputs come in ascending position order. The count K depends on
    the data and `tau` (the official code has no token budget; its README lowers `tau` for
    fewer tokens).

    Parameters: `tau` (0.9, the README's default setting; `mm_zip_tau`), `epsilon` (0.05,
    `mm_zip_epsilon`; None for exact components), `seed` (0, the sampling generator's seed, the
    same for every row). No signals.

    Bookkeeping: `source` sends each token to the output of its component (through both steps)
    and special tokens pass through in front as their own slots; the merge of step 3 also adds
    each token into its nearest output, which `source` cannot record (`sizes` count component
    members). `positions` are each output's representative token (the representative of the
    representative step-1 token). Rows of a batch that compress to different counts raise a
    ValueError (the official code takes one video at a time).

    Differences from the official code:
    - The official code lists a component as the nodes whose union-find parent is the root
      (`uf.parent == root`), which misses nodes more than one link below it: in practice
      unsampled nodes of graphs over about 3,230 nodes (up to a few percent of them in our
      checks; with every node sampled the final finds flatten the trees and none was missed).
      Missed tokens drop out of their component's mean and order (they still join step 3).
      Here every member of a component counts: otherwise the components, their order and
      the outputs match the official functions run on the same sample (float64, to 1e-10).
    - The sampled nodes come from `torch.randperm` with a generator seeded by `seed` (per row
      and step) instead of the unseeded `np.random.choice`, so results are deterministic; they
      differ from the official only when fewer than all nodes are sampled.
    - Similarities are computed in float32 (float64 for float64 inputs) rather than the
      model's half precision, and norms are clamped at 1e-12 (a zero token makes NaN there).
    - The official code (LLaVA-OneVision) splits features into frames of the first item's
      token count; on anyres images every crop is a frame. Here frames come from `layout`:
      (T, H, W) is T frames; (H, W) or no layout is one frame.
    - The official code has no special tokens; here they are kept unchanged and take no part
      in the graphs or the merge. Input `sizes` do not weight the means (as officially).
    - Where nothing merges the row is returned unchanged without the step-3 similarities (the
      official computes (x + x) / 2 = x), and a single frame that step 1 leaves unmerged skips
      step 2 (the same graph again): shortcuts with the same result.
    - `tau` defaults to 0.9, the README's default setting; the code's fallback when a model's
      config lacks `mm_zip_tau` is 0.95.
    """

    tau: float = 0.9
    epsilon: float | None = 0.05
    seed: int = 0

    paper = "sun2025llava"
    stage = "projector"
    modality = ("video", "image")
    mechanisms = ("similarity",)
    copies = False
    identity = {"tau": 1.0}
    example = {"tau": 0.9}
    benchmark = {"tau": 0.9}

    def __post_init__(self) -> None:
        hint = (
            "pass the cosine similarity threshold, a number in [-1, 1] (0.9 by default; lower "
            "merges more)"
        )
        check_number("tau", self.tau, -1.0, 1.0, hint=hint)
        if self.epsilon is not None:
            hint = (
                "pass the error tolerance of the approximate components, a positive finite "
                "number (0.05 by default), or None for exact components"
            )
            # the open end at inf admits finite numbers only
            check_number(
                "epsilon", self.epsilon, 0.0, math.inf, open_low=True, open_high=True, hint=hint
            )
        check_int("seed", self.seed, hint="pass an int seed for the node sampling")

    def output_count(self, tokens: Tokens) -> int | None:
        return None  # depends on the similarity graphs

    def compress(self, tokens: Tokens) -> Compression:
        if tokens.count == tokens.special:
            return identity(tokens)
        layout = tokens.grid
        frames = layout[0] if len(layout) == 3 else 1
        x = tokens.features
        rows = [
            self._row(x[b].to(work_dtype(x)), frames, tokens.special) for b in range(x.shape[0])
        ]
        return stack_rows(tokens, rows, " (their connected components differ)")

    def _sampled(self, graphs: int, nodes: int, device: torch.device) -> Tensor:
        """(graphs, nodes) bool: the nodes each graph's search starts from."""
        take = sample_size(nodes, self.epsilon)
        sampled = torch.ones(graphs, nodes, dtype=torch.bool, device=device)
        if take < nodes:
            generator = torch.Generator().manual_seed(self.seed)
            for graph in range(graphs):
                chosen = torch.randperm(nodes, generator=generator)[take:].to(device)
                sampled[graph, chosen] = False
        return sampled

    def _scc(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """SCC of each of the G graphs of `x` (G, P, D): (means (K, D), component, representative)."""
        g, p, _ = x.shape
        adjacency = cosine_matrix(x) > self.tau
        component, representative = semantic_components(adjacency, self._sampled(g, p, x.device))
        means = component_means(x.reshape(g * p, -1), component, representative.shape[0])
        return means, component, representative

    def _row(self, x: Tensor, frames: int, special: int) -> tuple[Tensor, Tensor, Tensor]:
        """One video: (positions (K,), features (K, D), source (N,))."""
        ordinary = x[special:]
        n = ordinary.shape[0]
        spatial, first, first_rep = self._scc(ordinary.reshape(frames, -1, ordinary.shape[1]))
        if frames > 1 or spatial.shape[0] < n:  # one frame unmerged: step 2 is the same graph
            merged, second, second_rep = self._scc(spatial.unsqueeze(0))
        else:
            merged, second, second_rep = spatial, first, first_rep
        count = merged.shape[0]
        if count == n:  # nothing merged: every token is its own nearest, (x + x) / 2 = x
            every = torch.arange(x.shape[0], device=x.device)
            return every, x, every
        nearest = cosine_matrix(ordinary.unsqueeze(0), merged.unsqueeze(0))[0].argmax(dim=1)
        total = merged.index_add(0, nearest, ordinary)
        sent = torch.bincount(nearest, minlength=count).to(x.dtype) + 1
        lead = torch.arange(special, device=x.device)
        positions = torch.cat([lead, first_rep[second_rep] + special])
        features = torch.cat([x[:special], total / sent.unsqueeze(1)])
        source = torch.cat([lead, second[first] + special])
        return positions, features, source
