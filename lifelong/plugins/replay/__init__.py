"""Replay: train on stored or generated samples of the past beside the stream batch."""

from lifelong.plugins.replay.agem import AGEM
from lifelong.plugins.replay.der import DER, DERpp
from lifelong.plugins.replay.er import ER
from lifelong.plugins.replay.gem import GEM
from lifelong.plugins.replay.generative_replay import GenerativeReplay

__all__ = ["AGEM", "DER", "DERpp", "ER", "GEM", "GenerativeReplay"]
