"""Captions for PerCoV2 from a captioning model the user keeps in a local folder (SYSTEMS.md 6.6.6).

Any transformers image-to-text model saved with ``save_pretrained`` works (BLIP, BLIP-2, GIT,
Florence-2, a VisionEncoderDecoder, ...): the folder is read with ``AutoModelForImageTextToText``
and its processor, never from the network. Decoding is greedy, so the same image and model give the
same caption. The caption is then coded losslessly in the file like one given with ``--caption``.

    latentcodec compress photo.png --model percov2 --weights SD3_DIR --captioner BLIP_DIR
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from latentcodec.errors import WeightsError
from latentcodec.models.percov2_streams import MAX_CAPTION_BYTES, normalise_caption


class LocalCaptioner:
    """image -> caption with a local transformers captioning model."""

    def __init__(self, folder: str | os.PathLike, max_new_tokens: int = 30, device: str | torch.device = "cpu"):
        folder = Path(os.path.expanduser(str(folder)))
        if not (folder / "config.json").is_file():
            raise WeightsError(f"captioning model not found: {folder / 'config.json'} is missing (save a "
                               f"transformers image-to-text model there with save_pretrained)")
        try:
            import transformers

            self.model = transformers.AutoModelForImageTextToText.from_pretrained(
                folder, local_files_only=True, dtype=torch.float32).to(device).eval()
            self.processor = _processor(transformers, folder)
        except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(f"{folder}: cannot load a captioning model ({first_line})") from None
        self.max_new_tokens = max_new_tokens
        self.device = torch.device(device)

    def to(self, device: str | torch.device) -> "LocalCaptioner":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.no_grad()
    def __call__(self, image) -> str:
        """A PIL image or a (1, 3, H, W) tensor in [0, 1] -> the caption (normalised, possibly empty)."""
        if isinstance(image, torch.Tensor):
            from PIL import Image

            array = (image[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
            image = Image.fromarray(array)
        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt").to(self.device)
        ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
        text = self.processor.batch_decode(ids, skip_special_tokens=True)[0]
        caption = " ".join(text.split())
        while len(caption.encode("utf-8")) > MAX_CAPTION_BYTES:  # a runaway generation: cut at a word
            caption = caption.rsplit(" ", 1)[0] if " " in caption else caption[: MAX_CAPTION_BYTES // 4]
        return normalise_caption(caption)


def _processor(transformers, folder: Path):
    """The folder's processor, or its image processor and tokenizer (a VisionEncoderDecoder has no processor)."""
    try:
        return transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError):
        images = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return _Pair(images, tokenizer)


class _Pair:
    def __init__(self, images, tokenizer):
        self.images, self.tokenizer = images, tokenizer

    def __call__(self, images, return_tensors: str):
        return self.images(images=images, return_tensors=return_tensors)

    def batch_decode(self, ids, skip_special_tokens: bool):
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens)
