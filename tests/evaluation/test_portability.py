"""The cross-arithmetic matrix: files written here decode to the same symbols and latents, and
pixels within +-1, in fresh processes that emulate other machines (one thread, oneDNN limited to
AVX2 or SSE4.1, ATen's scalar kernels, NCHW), for the shipped image default at every rate and the
shipped video default over 8 frames."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

import latentcodec
from latentcodec.data.video import read_frames
from latentcodec.nn.integer import to_fixed
from latentcodec.evaluation.portability import ARITHMETIC_CONFIGURATIONS, arithmetic_matrix, decode_fingerprint

pytestmark = pytest.mark.slow


def _sha(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def _check(entries, files):
    assert len(entries) == len(ARITHMETIC_CONFIGURATIONS) * files
    failures = [e for e in entries if not (e.ok and e.latents_equal and e.max_pixel_difference <= 1)]
    assert not failures, failures


def test_image_files_decode_identically_under_every_arithmetic(kodak_dir, tmp_path):
    codec = latentcodec.load("glc-image")
    image = Image.open(kodak_dir / "kodim23.png").convert("RGB").crop((256, 128, 448, 256))
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    paths, references = [], []
    for rate in range(codec.model.num_rates):
        result = codec.model.encode(x, rate)
        path = tmp_path / f"q{rate}.lci"
        path.write_bytes(result.data)
        fingerprint = decode_fingerprint(result.data, codec.model)
        # The decoder reproduces the encoder's latent exactly, in the same process too.
        assert fingerprint.latent_hashes[0] == _sha(to_fixed(result.latent_hat))
        paths.append(path)
        references.append(fingerprint)
    _check(arithmetic_matrix(paths, references, ["--model", "glc-image"]), len(paths))


def test_video_file_decodes_identically_under_every_arithmetic(shared_dir, tmp_path):
    codec = latentcodec.load("glc-video", quality=32)
    frames = [torch.from_numpy(f.copy()).permute(2, 0, 1).float().div(255)
              for f in read_frames(shared_dir / "data/video/carphone_qcif/carphone_qcif.y4m", limit=8)]
    data = codec.model.compress(torch.stack(frames), 32)
    path = tmp_path / "clip.lcv"
    path.write_bytes(data)
    reference = decode_fingerprint(data, codec.model)
    assert len(reference.latent_hashes) == 8
    _check(arithmetic_matrix([path], [reference], ["--model", "glc-video"]), 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_decode_each_others_files(kodak_dir, shared_dir):
    image = Image.open(kodak_dir / "kodim23.png").convert("RGB").crop((256, 128, 448, 256))
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    cpu, cuda = latentcodec.load("glc-image"), latentcodec.load("glc-image", device="cuda")
    for rate in range(cpu.model.num_rates):
        for writer, reader in ((cpu.model, cuda.model), (cuda.model, cpu.model)):
            data = writer.compress(x.to(next(writer.parameters()).device), rate)
            assert decode_fingerprint(data, reader).latent_hashes == decode_fingerprint(data, writer).latent_hashes
    frames = torch.stack([torch.from_numpy(f.copy()).permute(2, 0, 1).float().div(255)
                          for f in read_frames(shared_dir / "data/video/carphone_qcif/carphone_qcif.y4m", limit=8)])
    cpu_video, cuda_video = latentcodec.load("glc-video", quality=32), latentcodec.load("glc-video", quality=32,
                                                                                        device="cuda")
    for writer, reader in ((cpu_video.model, cuda_video.model), (cuda_video.model, cpu_video.model)):
        data = writer.compress(frames.to(next(writer.parameters()).device), 32)
        assert decode_fingerprint(data, reader).latent_hashes == decode_fingerprint(data, writer).latent_hashes


def test_dlf_files_decode_identically_under_every_arithmetic(kodak_dir, tmp_path):
    """DLF (tiny preset, random weights, with its semantic-token prior): the decoded detail latent and
    the decoded token indices, under the integer detail prior and the integer masked-token model."""
    from latentcodec.models.dlf import DLF, DLFConfig

    torch.manual_seed(0)
    model = DLF(DLFConfig.tiny()).eval()
    with torch.no_grad():
        model.hybrid_codec.quantize_feat.factorized_prior_vec.normal_(0.0, 3.0)
    model.save_pretrained(tmp_path / "weights")
    image = Image.open(kodak_dir / "kodim23.png").convert("RGB").crop((256, 128, 448, 256))
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    paths, references = [], []
    for rate in range(model.num_rates):
        data = model.compress(x, rate)
        path = tmp_path / f"dlf{rate}.lci"
        path.write_bytes(data)
        paths.append(path)
        references.append(decode_fingerprint(data, model))
    _check(arithmetic_matrix(paths, references, ["--model", "dlf", "--weights", str(tmp_path / "weights")]),
           len(paths))
