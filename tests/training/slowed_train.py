"""``python tests/training/slowed_train.py CONFIG``: ``latentcodec train CONFIG`` with every training step
followed by a pause, so a test can SIGKILL the run mid-way however fast the machine trains tiny models
(a 6-step tiny run can finish within one poll interval). The numbers it computes are unchanged."""
import sys
import time

from latentcodec.training.trainer import Trainer

PAUSE_SECONDS = 0.25
_train_step = Trainer.train_step


def _slowed_train_step(self):
    losses = _train_step(self)
    time.sleep(PAUSE_SECONDS)
    return losses


if __name__ == "__main__":
    Trainer.train_step = _slowed_train_step
    from latentcodec.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
