"""Run under torchrun: train a config, then save this rank's parameters to OUT/rank<r>.pt."""

import sys

import torch

from latentcodec.training.config import load_config
from latentcodec.training.trainer import Trainer

if __name__ == "__main__":
    config_path, out_dir = sys.argv[1], sys.argv[2]
    trainer = Trainer(load_config(config_path))
    first_batch = trainer.stream.next_batch()
    trainer.stream.load_state_dict({"epoch": 0, "position": 0})
    trainer.fit()
    state = {"model": trainer.model.state_dict(), "discriminator": trainer.discriminator.state_dict() if trainer.discriminator is not None else {},
             "first_batch": first_batch, "lambdas": trainer.lambdas}
    torch.save(state, f"{out_dir}/rank{trainer.dist.rank}.pt")
    trainer.close()
