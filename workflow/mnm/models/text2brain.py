"""Text2Brain baseline (Ngo et al., MICCAI 2021 / MedIA 2022): text -> 3D CNN -> voxel map.

Architecture (the public code, ``ngohgia/text2brain``: ``models/text2brain_model.py`` and
``models/decoder.py``, read for this port):

* the text embedding goes through dropout, one fully connected layer to a
  ``fc_channels x 4 x 5 x 4`` latent volume, dropout and ReLU;
* three transposed-convolution blocks (kernel 4, stride 2, padding 1, output padding 1, then
  BatchNorm and Hardtanh(-6, 6)) double the volume each time (n -> 2n + 1) while halving the
  channels (``decoder_filters``, /2, /4): 4 x 5 x 4 -> 9 x 11 x 9 -> 19 x 23 x 19 -> 39 x 47 x 39;
* an output convolution (kernel 3, padding 2, then Hardtanh) to one channel, 41 x 49 x 41,
  cropped by one voxel at the start of each axis: 40 x 48 x 40 voxels of 4 mm
  (:data:`mnm.kde_maps.COARSE_SHAPE`, the grid its ``predict.py`` pastes the output into);
* loss: mean squared error over the brain-mask voxels (``utils/loss.py``
  ``mse_with_mask_loss``) against the article's map divided by its maximum
  (``utils/dataset.py``).

Where this port differs, and why:

* **frozen text encoder**: Text2Brain fine-tunes SciBERT end to end; here the run's encoder
  is frozen (its embeddings are a stage output shared by every model) and the fully connected
  layer is the learned projection, so the comparison with the other baselines is at equal
  text features;
* **targets**: the article's KDE map of the brain stage (unit Gaussians, FWHM
  ``brain.fwhm_mm``; :mod:`mnm.kde_maps`) instead of Text2Brain's own activation maps, so every
  model is trained and scored against the same truth;
* **no BatchNorm on the one-channel output** (Text2Brain has one): it rescales each predicted
  map by statistics of the batch, so that what the model predicts in evaluation mode (running
  statistics) differs from what it was trained to predict until the running statistics have
  caught up, which thousands of steps do but a small corpus and early stopping do not
  (measured on a planted mapping: eval-mode MSE no better than a zero map while the
  train-mode loss had fallen 10 times; without it both agree and the mapping is learned);
* **the output convolution starts at zero** (weights and bias; PyTorch's default elsewhere): the
  targets are maps divided by their maximum, mostly near 0 (a zero map has a mean squared
  error of about 0.002 on the embedded corpus), while a randomly initialised decoder starts
  around 0.4; early stopping on inner validation then ended training before the loss had
  even reached the zero map's (measured: test error 0.008 at the chosen epoch). Starting
  from the empty map, every step refines a sensible prediction;
* **mean instead of sum** of the squared errors (Text2Brain's training script sums): the same
  minimiser, and a loss scale that does not depend on the batch or mask size, so the shared
  recipe's learning rate and warm-up apply;
* **optimiser and epoch selection**: the shared recipe (:mod:`mnm.training.loop`: AdamW,
  warm-up + cosine, early stopping on inner-validation retrieval) instead of Text2Brain's
  linear schedule and selection on validation loss or correlation: a fair comparison;
* **smaller default widths** (``fc_channels``, ``decoder_filters``; the released checkpoint
  uses 64 and 32): the decoder's cost is dominated by the last transposed convolution on
  71,487 voxels; the defaults keep a fold trainable on a CPU (see ``benchmarks/bench_text2brain.py``);
* **optionally fewer up-sampling blocks** (``up_blocks``, 3 = Text2Brain): the embedded run
  stops the decoder on the 8 mm grid and paints each 8 mm voxel onto the 2 x 2 x 2 voxels of
  the same 4 mm grid, the CPU recipe that lets the default run train it in every fold.

The module follows :class:`mnm.models.base.TextBrainModel`: ``encode_text`` returns the
predicted map at the mask voxels, ``encode_brain`` the max-normalised KDE map at the same
voxels, ``score`` their Pearson correlation (retrieval), ``loss`` the masked MSE.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnm.models.regression import MLPRegression

__all__ = ["LATENT_SHAPE", "decoder_output_shape", "paint_blocks", "mask_block_index", "Text2Brain"]

#: Spatial shape of the latent volume the fully connected layer fills (Text2Brain's default).
LATENT_SHAPE = (4, 5, 4)
#: Bound of Text2Brain's Hardtanh activations.
HARDTANH_BOUND = 6.0


def decoder_output_shape(latent_shape=LATENT_SHAPE) -> tuple[int, int, int]:
    """Output volume of the model: three ``n -> 2n + 1`` up-samplings, ``+2``, crop 1.

    With fewer transposed-convolution blocks (``up_blocks``) the decoder ends on a grid
    2 or 4 times coarser whose voxels fill the same volume (``8 (n + 1)``; :func:`paint_blocks`).
    """
    shape = []
    for n in latent_shape:
        for _ in range(3):
            n = 2 * n + 1
        shape.append(n + 2 - 1)
    return tuple(shape)


def paint_blocks(volume: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour up-sampling of ``(n, a, b, c)`` volumes: coarse voxel ``j`` fills the
    fine voxels ``[j f, (j + 1) f)`` of each axis.

    A broadcast and a reshape instead of ``F.interpolate``: the same values, and a backward
    pass that is a plain sum over each block (PyTorch's trilinear up-sampling backward was a
    third of a training step on the CPU).
    """
    if factor == 1:
        return volume
    n, a, b, c = volume.shape
    blocks = volume[:, :, None, :, None, :, None].expand(n, a, factor, b, factor, c, factor)
    return blocks.reshape(n, a * factor, b * factor, c * factor)


def _block(layer: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(layer, nn.BatchNorm3d(channels),
                         nn.Hardtanh(-HARDTANH_BOUND, HARDTANH_BOUND))


def _up(in_channels: int, out_channels: int) -> nn.Sequential:
    return _block(nn.ConvTranspose3d(in_channels, out_channels, kernel_size=4, stride=2, padding=1,
                                     output_padding=1), out_channels)


def mask_block_index(mask: np.ndarray, factor: int) -> np.ndarray:
    """Flat index, into the volume ``factor`` times coarser, of each voxel of ``mask`` (C order).

    ``paint_blocks(volume, factor)[:, mask]`` equals ``volume.flatten(1)[:, index]``: the mask
    voxels are gathered from the coarse output directly, without painting the full-resolution
    volume and masking it (a boolean-mask selection and its scatter backward were two thirds
    of a Text2Brain training step with ``up_blocks`` 1 at 20,000 articles, benchmarks/scale.md).
    """
    mask = np.asarray(mask, dtype=bool)
    if any(n % factor for n in mask.shape):
        raise ValueError(f"mask shape {mask.shape} is not a multiple of the block size {factor}")
    coarse_shape = tuple(n // factor for n in mask.shape)
    return np.ravel_multi_index(tuple(axis // factor for axis in np.nonzero(mask)), coarse_shape)


class Text2Brain(nn.Module):
    """Text embedding -> fully connected layer -> 3D transposed convolutions -> voxel map.

    Parameters
    ----------
    text_dim : int
        Text embedding size.
    brain_dim : int
        Number of mask voxels (the length of the KDE vectors it is trained on).
    fc_channels : int
        Channels of the ``4 x 5 x 4`` latent volume.
    decoder_filters : int
        Channels after the first transposed convolution (then /2 and /4); a multiple of 4.
    dropout : float
        Dropout on the text embedding and on the latent volume.
    up_blocks : {3, 2, 1}
        Transposed-convolution blocks. 3 is Text2Brain (a 4 mm map); with 2 (or 1) the
        decoder stops on the 8 mm (16 mm) grid of the same volume and each of its voxels
        fills the 2 x 2 x 2 (4 x 4 x 4) voxels of 4 mm it covers (:func:`paint_blocks`):
        the last, costliest block is skipped
        (4.5 times less CPU per step at 2, widths 8/8), the output grid and everything downstream
        stay the same.
    latent_shape : 3 ints
        Spatial shape of the latent volume; the output grid is :func:`decoder_output_shape`
        of it (the default gives Text2Brain's 40 x 48 x 40; smaller ones serve tests).
    mask : 3D bool array, optional
        Brain mask on the output grid, ``brain_dim`` voxels. It is a buffer (saved with the
        weights); when omitted, an empty mask is created and must be loaded from a state dict.
    """

    def __init__(self, text_dim: int, brain_dim: int, fc_channels: int = 16, decoder_filters: int = 16,
                 dropout: float = 0.5, up_blocks: int = 3, latent_shape=LATENT_SHAPE, mask=None):
        super().__init__()
        if decoder_filters % 4 or decoder_filters < 4:
            raise ValueError(f"text2brain decoder_filters must be a positive multiple of 4, got {decoder_filters}")
        self.fc_channels = int(fc_channels)
        self.brain_dim = int(brain_dim)
        self.latent_shape = tuple(int(n) for n in latent_shape)
        self.output_shape = decoder_output_shape(self.latent_shape)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(text_dim, self.fc_channels * int(np.prod(self.latent_shape)))
        if up_blocks not in (1, 2, 3):
            raise ValueError(f"text2brain up_blocks must be 1, 2 or 3, got {up_blocks}")
        self.upsample_factor = 2 ** (3 - int(up_blocks))
        filters = int(decoder_filters)
        channels = [self.fc_channels, filters, filters // 2, filters // 4][:int(up_blocks) + 1]
        self.decoder = nn.Sequential(
            *[_up(c_in, c_out) for c_in, c_out in zip(channels[:-1], channels[1:])],
            nn.Conv3d(channels[-1], 1, kernel_size=3, stride=1, padding=2),
            nn.Hardtanh(-HARDTANH_BOUND, HARDTANH_BOUND),
        )
        # Start from the empty map (see the module docstring): zero output weights and bias.
        nn.init.zeros_(self.decoder[-2].weight)
        nn.init.zeros_(self.decoder[-2].bias)
        if mask is None:
            mask = np.zeros(self.output_shape, dtype=bool)
        self.register_buffer("mask", torch.as_tensor(np.asarray(mask, dtype=bool)))
        self.check_mask()
        self._index_mask_voxels()

    def check_mask(self) -> None:
        """The mask must lie on the output grid; a non-empty one must have ``brain_dim`` voxels."""
        if tuple(self.mask.shape) != self.output_shape:
            raise ValueError(f"text2brain mask of shape {tuple(self.mask.shape)} is not on the decoder's "
                             f"{self.output_shape} grid")
        n_voxels = int(self.mask.sum())
        if n_voxels and n_voxels != self.brain_dim:
            raise ValueError(f"text2brain mask has {n_voxels} voxels but the brain vectors have {self.brain_dim}")

    def _index_mask_voxels(self) -> None:
        """The derived (not saved) buffer of :func:`mask_block_index` for the current mask."""
        index = mask_block_index(self.mask.cpu().numpy(), self.upsample_factor)
        self.register_buffer("mask_index", torch.as_tensor(index, dtype=torch.long, device=self.mask.device),
                             persistent=False)

    def _load_from_state_dict(self, *args, **kwargs):  # noqa: D401 - torch hook
        super()._load_from_state_dict(*args, **kwargs)
        self.check_mask()
        self._index_mask_voxels()

    def _decoder_volume(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's own output ``(n, *output_shape / upsample_factor)``, cropped."""
        latent = F.relu(self.dropout(self.fc(self.dropout(x))))
        return self.decoder(latent.view(-1, self.fc_channels, *self.latent_shape))[:, 0, 1:, 1:, 1:]

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Full output volumes ``(n, *output_shape)`` (values outside the mask are unconstrained)."""
        return paint_blocks(self._decoder_volume(x), self.upsample_factor)

    def encode_text(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted map at the mask voxels ``(n, brain_dim)`` (C order of the mask), gathered
        from the decoder's output (:func:`mask_block_index`)."""
        return self._decoder_volume(x).flatten(1).index_select(1, self.mask_index)

    def encode_brain(self, y: torch.Tensor) -> torch.Tensor:
        """KDE map divided by its maximum (Text2Brain's target scaling); empty maps stay 0."""
        peak = y.amax(dim=1, keepdim=True)
        return y / torch.where(peak > 0, peak, torch.ones_like(peak))

    # The MLP regression's score (Pearson correlation of predicted and candidate vectors), loss
    # (mean squared error: over the mask voxels here, Text2Brain's masked voxel loss) and
    # optimiser hooks: one implementation of each.
    score = MLPRegression.score
    loss = MLPRegression.loss
    no_decay_parameter_names = MLPRegression.no_decay_parameter_names
    log_scalars = MLPRegression.log_scalars
